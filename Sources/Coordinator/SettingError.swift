// The coordinator library's error for a setting it cannot honour: a
// quadrature order the model does not allow, a weights variable that is text,
// a site to exclude that the sites file does not list. The library names
// settings, never command-line flags; each front end words them as its own
// options (`fedmix` as `--nagq`, a sites file as `exclude_sites`, the R
// client as `nAGQ =`).

/// Something the analyst must change in what they asked for (rather than in
/// the sites or the data).
public struct SettingError: Error, CustomStringConvertible, Equatable {
    /// The analysis settings a message can name.
    public enum Setting: String, Sendable, Equatable, CaseIterable {
        case formula, family, nAGQ, filter, weights, missingIndicator, excludeSitesMissingAbove, excludeSites, confint, cluster, corstr, order, smallSample, marginal
        /// Multiple imputation: the imputation models, M, the seed, sweeps, MNAR shifts.
        case impute, imputations, seed, iterations, delta
    }

    public enum Part: Sendable, Equatable {
        case text(String)
        case setting(Setting)
    }

    public var parts: [Part]

    /// The message with each setting worded by `name`.
    public func worded(_ name: (Setting) -> String) -> String {
        parts.map { part in
            switch part { case .text(let t): return t; case .setting(let s): return name(s) }
        }.joined()
    }

    /// The message naming settings as the library calls them (`nAGQ`).
    public var description: String { worded(\.rawValue) }

    /// The settings the message names, in order.
    public var settings: [Setting] {
        parts.compactMap { if case .setting(let s) = $0 { return s } else { return nil } }
    }
}

extension SettingError: ExpressibleByStringInterpolation {
    public struct StringInterpolation: StringInterpolationProtocol {
        var parts: [Part] = []
        public init(literalCapacity: Int, interpolationCount: Int) {}
        public mutating func appendLiteral(_ literal: String) { if !literal.isEmpty { parts.append(.text(literal)) } }
        public mutating func appendInterpolation(_ setting: Setting) { parts.append(.setting(setting)) }
        public mutating func appendInterpolation<T>(_ value: T) { parts.append(.text("\(value)")) }
    }

    public init(stringLiteral value: String) { parts = [.text(value)] }
    public init(stringInterpolation: StringInterpolation) { parts = stringInterpolation.parts }
}
