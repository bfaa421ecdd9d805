using System.Globalization;
using System.Management.Automation;

namespace DifferenceEngine.Commands;

/// <summary>
/// Lets a TimeSpan parameter take a number of seconds (4, 0.2, "0.5") as well as a TimeSpan or "00:00:04";
/// without it PowerShell would read a number as ticks.
/// </summary>
[AttributeUsage(AttributeTargets.Property | AttributeTargets.Field)]
public sealed class SecondsToTimeSpanAttribute : ArgumentTransformationAttribute
{
    public override object Transform(EngineIntrinsics engineIntrinsics, object inputData)
    {
        object value = inputData is PSObject ps ? ps.BaseObject : inputData;
        double? seconds = value switch
        {
            string s when double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double parsed) => parsed,
            string => null, // "00:00:04" and the like: PowerShell's own conversion to TimeSpan
            IConvertible c when IsNumber(c.GetTypeCode()) => c.ToDouble(CultureInfo.InvariantCulture),
            _ => null,
        };
        if (seconds is not double s2) return inputData;
        if (!double.IsFinite(s2) || Math.Abs(s2) > TimeSpan.MaxValue.TotalSeconds)
            throw new ArgumentTransformationMetadataException($"{value} is not a number of seconds that a TimeSpan can hold.");
        return TimeSpan.FromSeconds(s2);
    }

    private static bool IsNumber(TypeCode code) => code is >= TypeCode.SByte and <= TypeCode.Decimal;
}
