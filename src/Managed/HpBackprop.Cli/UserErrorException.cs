namespace HpBackprop.Cli;

/// <summary>A problem with the user's arguments or input: printed without a stack trace, exit code 2.</summary>
public sealed class UserErrorException : Exception
{
    /// <summary>Creates the exception.</summary>
    public UserErrorException(string message) : base(message) { }
}
