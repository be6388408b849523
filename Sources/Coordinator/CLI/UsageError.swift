// The coordinator library's usage error: something the analyst must change
// on the command line (an option's value that the data refuses, a sites file
// that cannot be read). The executables parse their command lines with
// CommandKit; `fedmix` reports these with exit status 2, as CommandKit's own.

/// A problem with what the analyst asked for (rather than with the sites
/// or the data), worded for the command line.
public struct UsageError: Error, CustomStringConvertible, Equatable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
