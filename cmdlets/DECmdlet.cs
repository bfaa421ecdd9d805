using System.Collections.Concurrent;
using System.Management.Automation;
using DifferenceEngine.Domains;
using DifferenceEngine.Hosting;

namespace DifferenceEngine.Commands;

/// <summary>
/// What every DifferenceEngine cmdlet shares: the -DEHost parameter and the current host, resolving
/// -Domain values, the one mapping of <see cref="DEException"/> to ErrorRecord, cancellation on
/// Ctrl-C, and progress from worker threads.
/// </summary>
public abstract class DECmdlet : PSCmdlet, IDisposable
{
    private readonly CancellationTokenSource _stopping = new();

    /// <summary>The host to work on (an embedded DEHost or a XenHost); by default the host connected last.</summary>
    [Parameter]
    [ValidateNotNull]
    [ArgumentCompleter(typeof(HostNameCompleter))]
    public virtual IDEHost? DEHost { get; set; }

    /// <summary>
    /// The name of the host a piped object came from (its Host property), for the cmdlets that take domains from the
    /// pipeline (<see cref="PipedDomainCmdlet.InputHost"/>); null for the others, which work on hosts.
    /// </summary>
    protected virtual string? PipedHost => null;

    /// <summary>
    /// The object piped in for the record being processed (as PowerShell wrapped it), for the cmdlets that take domains from
    /// the pipeline (<see cref="PipedDomainCmdlet.PipedRecord"/>); null for the others, and when nothing is piped.
    /// </summary>
    protected virtual PSObject? PipedRecord => null;

    /// <summary>Cancelled when the pipeline stops (Ctrl-C, Select-Object -First).</summary>
    protected CancellationToken StopToken => _stopping.Token;

    protected override void StopProcessing() => _stopping.Cancel();

    public void Dispose()
    {
        _stopping.Dispose();
        GC.SuppressFinalize(this);
    }

    /// <summary>
    /// -DEHost when given, else the current host; terminates with "NoHostConnected" when there is none, and with
    /// "HostDisconnected" when -DEHost names a host that has been disconnected (its objects stay readable, but no
    /// cmdlet works on it).
    /// </summary>
    protected IDEHost TargetHost
    {
        get
        {
            var host = GivenOrCurrentHost;
            if (!host.IsConnected) throw Terminate(Hosting.DEHost.HostDisconnected(host.Name));
            return host;
        }
    }

    /// <summary>
    /// -DEHost when given, else the host a piped object names (<see cref="PipedHost"/>), else the current host, connected or
    /// not; terminates with "NoHostConnected" when there is none, and with "HostNotFound" when the piped object names a host
    /// that is not connected.
    /// </summary>
    protected IDEHost GivenOrCurrentHost
    {
        get
        {
            if (DEHost is not null) return DEHost;
            if (PipedHost is { Length: > 0 } piped)
                return HostRegistry.Find(piped) ?? throw Terminate(InputHostNotFound(piped));
            return HostRegistry.Current ?? throw Terminate(new DEException("NoHostConnected", DEErrorKind.ConnectionError,
                "No DifferenceEngine host is connected. Run Connect-DEHost first, or pass one with -DEHost.", null));
        }
    }

    /// <summary>"HostNotFound" (ObjectNotFound): a piped object's Host names no connected host.</summary>
    protected static DEException InputHostNotFound(string name) =>
        new("HostNotFound", DEErrorKind.ObjectNotFound,
            $"No connected host is named '{name}' (the Host of the piped object). Get-DEHost lists the connected hosts; " +
            "Connect-DEHost connects one.", name);

    /// <summary>
    /// False, after writing "HostNotFound" for this record, when a piped object names a host that is not connected and
    /// -DEHost was not given: the record is skipped and the next goes on.
    /// </summary>
    protected bool InputHostConnected()
    {
        if (DEHost is not null || PipedHost is not { Length: > 0 } piped || HostRegistry.Find(piped) is not null) return true;
        WriteDEError(InputHostNotFound(piped));
        return false;
    }

    /// <summary>
    /// The target host for a cmdlet that exists only on the embedded host (New-DEDomain, Get-DEPage, ...): terminates
    /// with "NoHostConnected" when there is none, and with "NotSupportedOnXenHost" on a Xen host, saying
    /// <paramref name="instead"/> (what to use there).
    /// </summary>
    protected DEHost EmbeddedHost(string instead)
    {
        var host = TargetHost;
        if (host is DEHost embedded) return embedded;
        throw Terminate(NotSupportedOnXenHost(host.Name, instead));
    }

    /// <summary>
    /// "NotSupportedOnXenHost" (NotImplemented): this cmdlet, or what <paramref name="what"/> names ("-LowWatermark"),
    /// is for embedded hosts only; <paramref name="instead"/> says what to use on Xen.
    /// </summary>
    protected DEException NotSupportedOnXenHost(string hostName, string instead, string? what = null) =>
        new("NotSupportedOnXenHost", DEErrorKind.NotImplemented,
            $"{what ?? MyInvocation.MyCommand.Name} is for embedded hosts only, and host '{hostName}' is a Xen host. {instead}", hostName);

    /// <summary>
    /// The domains that <paramref name="selectors"/> name, in order and without repeats. A name without
    /// wildcards that matches nothing writes "DomainNotFound" and the rest go on; a pattern that matches
    /// nothing is not an error. On a Xen host a domain id ("3") names a domain too. Names are looked up on
    /// <see cref="GivenOrCurrentHost"/>: a piped object's own host when it has one, where an unknown host is "HostNotFound"
    /// and the rest go on. A domain object of a disconnected host is "HostDisconnected"; one that was removed is
    /// "DomainRemoved", as is a piped record (page stats, a policy) of a domain removed since, even when a domain of that name
    /// was made again (<see cref="RecordedDomain"/>); a domain object of another host than an explicit -DEHost is
    /// "DomainNotFound".
    /// </summary>
    protected IReadOnlyList<IDEDomain> ResolveDomains(IEnumerable<DomainSelector> selectors) =>
        ResolveDomains(selectors, embeddedOnly: null);

    /// <summary>
    /// <see cref="ResolveDomains(IEnumerable{DomainSelector})"/> for a cmdlet that exists only on the embedded host:
    /// names are looked up on <see cref="EmbeddedHost"/>, and a Xen domain object terminates with "NotSupportedOnXenHost"
    /// saying <paramref name="instead"/>.
    /// </summary>
    protected IReadOnlyList<Domain> ResolveEmbeddedDomains(IEnumerable<DomainSelector> selectors, string instead) =>
        ResolveDomains(selectors, instead).Cast<Domain>().ToArray();

    private IReadOnlyList<IDEDomain> ResolveDomains(IEnumerable<DomainSelector> selectors, string? embeddedOnly)
    {
        var gathered = new GatheredDomains();
        Gather(gathered, selectors, embeddedOnly);
        return gathered.Found;
    }

    /// <summary>
    /// The domains a cmdlet that acts once at the end (Invoke-DEScan, Invoke-DEWorkload, Export-DEReport) gathers record by
    /// record, in order and without repeats.
    /// </summary>
    protected sealed class GatheredDomains
    {
        internal List<IDEDomain> Found { get; } = [];
        internal HashSet<IDEDomain> Seen { get; } = new(ReferenceEqualityComparer.Instance);

        /// <summary>Whether any record (or -Domain itself) brought selectors, found or not.</summary>
        public bool Selected { get; internal set; }

        public IReadOnlyList<IDEDomain> Domains => Found;
    }

    /// <summary>
    /// Resolves one record's <paramref name="selectors"/> into <paramref name="into"/> as
    /// <see cref="ResolveDomains(IEnumerable{DomainSelector})"/> does, now, while the piped host is this record's: a piped
    /// page or policy names its domain on its own host (its Host property, <see cref="PipedHost"/>), so gathering the
    /// selectors to resolve them at the end would look every name up on the last record's host. <paramref name="embeddedOnly"/> as for
    /// <see cref="ResolveEmbeddedDomains"/>.
    /// </summary>
    protected void Gather(GatheredDomains into, IEnumerable<DomainSelector> selectors, string? embeddedOnly = null)
    {
        into.Selected = true;
        var found = into.Found;
        var seen = into.Seen;
        foreach (var selector in selectors)
        {
            if (selector.Domain is { } given)
            {
                if (embeddedOnly is not null && given is not Domain)
                    ThrowDEError(NotSupportedOnXenHost(given.Host.Name, embeddedOnly));
                if (!given.Host.IsConnected)
                    WriteDEError(Hosting.DEHost.HostDisconnected(given.Host.Name));
                else if (given.IsRemoved)
                    WriteDEError(DomainRemoved(given));
                else if (DEHost is not null && !ReferenceEquals(given.Host, DEHost))
                    WriteDEError(DomainOfAnotherHost(given, DEHost, " (given with -DEHost)"));
                else if (seen.Add(given))
                    found.Add(given);
                continue;
            }
            if (!InputHostConnected()) continue;
            IDEHost host = embeddedOnly is null ? TargetHost : EmbeddedHost(embeddedOnly);
            if (WildcardPattern.ContainsWildcardCharacters(selector.Name))
            {
                var pattern = new WildcardPattern(selector.Name, WildcardOptions.IgnoreCase);
                foreach (var d in DomainsOf(host))
                    if (pattern.IsMatch(d.Name) && seen.Add(d))
                        found.Add(d);
            }
            else
            {
                var named = Terminating(() => host.TryGetDomain(selector.Name));
                // A piped record of a domain (page stats, a policy, a domain that came back through remoting) names it by
                // name and id: a domain of that name that is not the one recorded is not the record's.
                if (RecordedDomain(selector) is { } recorded && !IsRecordedDomain(recorded, host, named))
                    WriteDEError(RecordOfRemovedDomain(recorded, host, named));
                else if (named is null)
                    WriteDEError(DomainNotFound(selector.Name));
                else if (seen.Add(named))
                    found.Add(named);
            }
        }
    }

    /// <summary>The domains of <paramref name="selectors"/>, or every domain of the target host when none are given.</summary>
    protected IReadOnlyList<IDEDomain> ResolveDomainsOrAll(DomainSelector[]? selectors) =>
        selectors is not null ? ResolveDomains(selectors) : InputHostConnected() ? DomainsOf(TargetHost) : [];

    /// <summary>Every domain of <paramref name="host"/>; an engine error (a disconnected Xen host) stops the cmdlet.</summary>
    protected IReadOnlyList<IDEDomain> DomainsOf(IDEHost host) => Terminating(() => host.Domains);

    /// <summary>Runs an engine call whose failure stops the cmdlet (with the engine's error id), for calls every item needs.</summary>
    protected T Terminating<T>(Func<T> call)
    {
        try
        {
            return call();
        }
        catch (DEException ex)
        {
            ThrowDEError(ex);
            throw; // not reached: ThrowTerminatingError always throws
        }
    }

    /// <summary>
    /// A file-system path as the provider resolves it (relative to the current location, "~" expanded),
    /// for a file that need not exist yet. A drive or parent that cannot be found is <paramref name="notFoundErrorId"/>;
    /// a path on another provider (Env:, Function:) is "PathNotFileSystem".
    /// </summary>
    protected string GetFileSystemPath(string path, string what, string notFoundErrorId) =>
        GetFileSystemPath(SessionState, path, what, notFoundErrorId);

    /// <summary><see cref="GetFileSystemPath(string, string, string)"/> for any cmdlet, through its session state.</summary>
    internal static string GetFileSystemPath(SessionState session, string path, string what, string notFoundErrorId)
    {
        string resolved;
        ProviderInfo provider;
        try
        {
            resolved = session.Path.GetUnresolvedProviderPathFromPSPath(path, out provider, out _);
        }
        catch (Exception ex) when (ex is System.Management.Automation.DriveNotFoundException or ProviderNotFoundException or ItemNotFoundException)
        {
            throw new DEException(notFoundErrorId, DEErrorKind.ObjectNotFound, $"The {what} '{path}' cannot be found: {ex.Message}", path, ex);
        }
        if (provider.Name != "FileSystem")
            throw new DEException("PathNotFileSystem", DEErrorKind.InvalidArgument,
                $"'{path}' is on the {provider.Name} provider; the {what} must be a file.", path);
        return resolved;
    }

    /// <summary>Runs one item's engine call; an engine error is written (non-terminating) and false returned.</summary>
    protected bool TryItem(Action action) => TryItem(() => { action(); return true; }, out _);

    /// <summary>Runs one item's engine call for its result; an engine error is written (non-terminating) and false returned.</summary>
    protected bool TryItem<T>(Func<T> func, out T result)
    {
        try
        {
            result = func();
            return true;
        }
        catch (DEException ex)
        {
            WriteDEError(ex);
            result = default!;
            return false;
        }
        catch (OperationCanceledException) when (StopToken.IsCancellationRequested)
        {
            throw new PipelineStoppedException(); // Ctrl-C while the call waited (a snapshot waits for a pass in progress)
        }
    }

    /// <summary>Writes a failure of one item as a non-terminating error; the cmdlet goes on with the next.</summary>
    protected void WriteDEError(DEException exception) => WriteError(ToErrorRecord(exception));

    /// <summary>Stops the cmdlet with a terminating error (a bad argument, no host).</summary>
    protected void ThrowDEError(DEException exception) => ThrowTerminatingError(ToErrorRecord(exception));

    /// <summary>
    /// Turns an engine error into an ErrorRecord: the engine's stable ErrorId, the category its kind maps
    /// to and its target. PowerShell appends ",DifferenceEngine.Commands.&lt;Cmdlet&gt;Command".
    /// </summary>
    public static ErrorRecord ToErrorRecord(DEException exception) =>
        new(exception, exception.ErrorId, ToCategory(exception.Kind), exception.Target);

    public static ErrorCategory ToCategory(DEErrorKind kind) => kind switch
    {
        DEErrorKind.InvalidArgument => ErrorCategory.InvalidArgument,
        DEErrorKind.InvalidData => ErrorCategory.InvalidData,
        DEErrorKind.ObjectNotFound => ErrorCategory.ObjectNotFound,
        DEErrorKind.ResourceExists => ErrorCategory.ResourceExists,
        DEErrorKind.ResourceUnavailable => ErrorCategory.ResourceUnavailable,
        DEErrorKind.PermissionDenied => ErrorCategory.PermissionDenied,
        DEErrorKind.ReadError => ErrorCategory.ReadError,
        DEErrorKind.WriteError => ErrorCategory.WriteError,
        DEErrorKind.InvalidOperation => ErrorCategory.InvalidOperation,
        DEErrorKind.NotImplemented => ErrorCategory.NotImplemented,
        DEErrorKind.ConnectionError => ErrorCategory.ConnectionError,
        _ => ErrorCategory.NotSpecified,
    };

    protected static DEException DomainNotFound(string name) => Hosting.DEHost.DomainNotFound(name);

    /// <summary>
    /// "DomainRemoved" (ObjectNotFound, the engine's id for a removed domain's pages): a domain object given, or the domain a
    /// piped record was taken of, has been removed (Remove-DEDomain, Disconnect-DEHost). One id for every cmdlet, whether the
    /// domain was removed before the cmdlet ran or while it worked; a domain of that name made since is another domain.
    /// </summary>
    protected static DEException DomainRemoved(IDEDomain domain) =>
        new("DomainRemoved", DEErrorKind.ObjectNotFound,
            $"Domain '{domain.Name}' (id {domain.Id}) has been removed from host '{domain.Host.Name}'" +
            (domain.Host.IsConnected && TryGetDomainQuietly(domain.Host, domain.Name) is { } now && !ReferenceEquals(now, domain)
                ? $"; the domain named '{domain.Name}' there now is another (id {now.Id}). Get it again (Get-DEDomain) to act on that one."
                : "."),
            domain.Name);

    /// <summary>
    /// "DomainRemoved" for a piped record (<see cref="RecordedDomain"/>) whose domain is gone: <paramref name="now"/> is the
    /// domain of that name on <paramref name="host"/> now (another one), or null.
    /// </summary>
    protected static DEException RecordOfRemovedDomain(RecordedDomainId recorded, IDEHost host, IDEDomain? now) =>
        new("DomainRemoved", DEErrorKind.ObjectNotFound,
            $"The domain '{recorded.Name}' that the piped record was taken of (id {recorded.Id}) has been removed from host " +
            $"'{host.Name}'" + (now is null
                ? "."
                : $"; the domain of that name there now is another (id {now.Id}). Get the record again (Get-DEPageStats, " +
                  "Get-DEPolicy, Get-DEDomain) to act on that one."),
            recorded.Name);

    private static IDEDomain? TryGetDomainQuietly(IDEHost host, string name)
    {
        try
        {
            return host.TryGetDomain(name);
        }
        catch (DEException)
        {
            return null;
        }
    }

    /// <summary>The host, name and id a piped record was taken of (<see cref="RecordedDomain"/>).</summary>
    protected sealed record RecordedDomainId(string Host, string Name, int Id);

    /// <summary>
    /// The domain that the object a selector came from was taken of, by host name, domain name and id: a piped page-stats row
    /// or policy (Get-DEPageStats, Get-DEPolicy) of this process. Null for anything else: names, live Domain objects (they
    /// know whether they were removed), pages (no id), and records back through remoting or from files (Import-Csv,
    /// Import-Clixml), which go by name (they may be of another process, whose ids say nothing here). The record is the selector's own
    /// (a deserialized domain given to -Domain), else the piped object when it names the selector's domain.
    /// </summary>
    protected RecordedDomainId? RecordedDomain(DomainSelector selector)
    {
        var identity = RecordedDomainOf(selector.Deserialized) ?? RecordedDomainOf(PipedRecord);
        return identity is not null && string.Equals(identity.Name, selector.Name, StringComparison.OrdinalIgnoreCase) ? identity : null;
    }

    /// <summary>The host, name and id <paramref name="record"/> was taken of (<see cref="RecordedDomain"/>); null for another object.</summary>
    protected static RecordedDomainId? RecordedDomainOf(PSObject? record)
    {
        switch (record?.BaseObject)
        {
            case null:
                return null;
            case Stats.DomainPageStats stats:
                return new(stats.Host, stats.Domain, stats.DomainId);
            case DomainPolicyView policy:
                return new(policy.Host, policy.Domain, policy.DomainId);
        }
        // Records back through remoting or a file (Export-Clixml) go by name, as rows of Import-Csv do: domain ids are a
        // process's own, and such a record may be of another process (a remote session, yesterday's host), where its id says
        // nothing here (a review: Import-Clixml of Get-DEPolicy in a new session was refused as DomainRemoved). Only
        // Remove-DEDomain, which destroys, still refuses a deserialized record whose id does not match.
        return null;
    }

    /// <summary>
    /// Whether <paramref name="named"/>, the domain of the record's name on <paramref name="host"/>, is the one the record was
    /// taken of. Ids are a host's own: the record's id says something only of the record's host (-DEHost naming another host
    /// looks the name up there, by name).
    /// </summary>
    protected static bool IsRecordedDomain(RecordedDomainId recorded, IDEHost host, IDEDomain? named) =>
        !string.Equals(host.Name, recorded.Host, StringComparison.OrdinalIgnoreCase) || named?.Id == recorded.Id;

    /// <summary>
    /// "DomainNotFound" for a domain object of another host than the one a cmdlet works on, saying whose it is (the host
    /// has no such domain, or one of that name that is another domain).
    /// </summary>
    protected static DEException DomainOfAnotherHost(IDEDomain domain, IDEHost host, string? why = null) =>
        new("DomainNotFound", DEErrorKind.ObjectNotFound,
            $"Domain '{domain.Name}' belongs to host '{domain.Host.Name}', not to host '{host.Name}'{why}.", domain.Name);

    /// <summary>
    /// Runs <paramref name="work"/> on a worker task while this (the pipeline) thread writes the progress
    /// the workers report, since Write* may only be called from the pipeline thread. Only the latest
    /// record is shown on each tick; a Completed record ends the bar. Ctrl-C cancels <see cref="StopToken"/>.
    /// </summary>
    protected T RunWithProgress<T>(int activityId, string activity, Func<Action<ProgressRecord>, T> work)
    {
        var queue = new ConcurrentQueue<ProgressRecord>();
        var task = Task.Run(() => work(queue.Enqueue));
        var done = ((IAsyncResult)task).AsyncWaitHandle;
        try
        {
            while (!done.WaitOne(100)) WriteLatest(queue);
            WriteLatest(queue);
        }
        catch
        {
            // Writing the progress failed (-ProgressAction Stop, or the pipeline stopping before StopProcessing ran): the
            // work must not go on behind the error, nor outlive what it uses (a source the caller disposes). It is
            // cancelled and waited for, and its own end (cancelled, most likely) is not what the caller sees.
            _stopping.Cancel();
            done.WaitOne();
            _ = task.Exception;
            throw;
        }
        finally
        {
            var completed = new ProgressRecord(activityId, activity, "Done") { RecordType = ProgressRecordType.Completed };
            if (!StopToken.IsCancellationRequested) WriteProgress(completed);
        }
        try
        {
            return task.GetAwaiter().GetResult();
        }
        catch (OperationCanceledException) when (StopToken.IsCancellationRequested)
        {
            throw new PipelineStoppedException();
        }
    }

    private void WriteLatest(ConcurrentQueue<ProgressRecord> queue)
    {
        ProgressRecord? latest = null;
        while (queue.TryDequeue(out var r)) latest = r;
        if (latest is not null && !StopToken.IsCancellationRequested) WriteProgress(latest);
    }

    private Exception Terminate(DEException exception)
    {
        ThrowDEError(exception);
        return exception; // not reached: ThrowTerminatingError always throws
    }
}
