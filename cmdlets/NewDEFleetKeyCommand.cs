using System.Management.Automation;
using DifferenceEngine.Fleet;

namespace DifferenceEngine.Commands;

/// <summary>Writes a new fleet key file: 32 random bytes, mode 0600 (New-DEFleetKey).</summary>
[Cmdlet(VerbsCommon.New, "DEFleetKey", SupportsShouldProcess = true)]
[OutputType(typeof(FileInfo))]
public sealed class NewDEFleetKeyCommand : DECmdlet
{
    /// <summary>Where to write the key file.</summary>
    [Parameter(Mandatory = true, Position = 0)]
    [ValidateNotNullOrEmpty]
    public string Path { get; set; } = "";

    /// <summary>Replace an existing key file (every fingerprint made with the old key can no longer be combined with new ones).</summary>
    [Parameter]
    public SwitchParameter Force { get; set; }

    protected override void ProcessRecord()
    {
        string path = "";
        try
        {
            path = GetFileSystemPath(Path, "fleet key file", "FleetKeyPathInvalid");
        }
        catch (DEException ex)
        {
            ThrowDEError(ex);
        }
        string action = Force && File.Exists(path)
            ? "Replace the fleet key (fingerprints made with the old key can no longer be combined with new ones)"
            : "Write a new fleet key";
        if (!ShouldProcess(path, action)) return;
        try
        {
            FleetKey.CreateFile(path, Force);
        }
        catch (DEException ex)
        {
            ThrowDEError(ex);
        }
        // Through the provider, so the FileInfo has PSPath, UnixMode and the rest, as Get-Item gives it.
        WriteObject(InvokeProvider.Item.Get([path], force: true, literalPath: true), enumerateCollection: true);
    }
}
