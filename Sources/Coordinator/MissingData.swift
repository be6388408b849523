// Missing-data strategies across sites: complete cases (the default), the
// missing-indicator method (fill a covariate with a stated constant and add
// its 0/1 missingness column), and leaving out sites where a variable is
// missing too often. `fedmix sensitivity` runs several side by side.

import Foundation
import Protocol

/// How an analysis treats missing values.
public struct MissingDataStrategy: Sendable, Equatable {
    /// Missing-indicator method: variable → fill value.
    public var indicators: [String: Double] = [:]
    /// Leave out sites where the variable's missing share exceeds the fraction.
    public var excludeAbove: [String: Double] = [:]
    public init(indicators: [String: Double] = [:], excludeAbove: [String: Double] = [:]) {
        self.indicators = indicators; self.excludeAbove = excludeAbove
    }

    /// A short label for reports.
    public var label: String {
        var parts: [String] = []
        for (v, c) in indicators.sorted(by: { $0.key < $1.key }) { parts.append("indicator \(v)=\(RNumberFormat.format(c))") }
        for (v, f) in excludeAbove.sorted(by: { $0.key < $1.key }) { parts.append("exclude \(v)>\(RNumberFormat.format(f))") }
        return parts.isEmpty ? "complete case" : parts.joined(separator: ", ")
    }

    /// Sites whose missing share of a variable exceeds its threshold, with the reason.
    /// Suppressed counts ("<5") are taken at their upper bound.
    public func sitesToExclude(_ descriptions: [SiteDescription]) throws -> [(site: String, reason: String)] {
        var out: [(String, String)] = []
        for d in descriptions {
            for (v, fraction) in excludeAbove.sorted(by: { $0.key < $1.key }) {
                guard let desc = d.variables.first(where: { $0.name == v }) else {
                    throw SettingError("\(.excludeSitesMissingAbove): site \"\(d.site)\" has no variable \"\(v)\"")
                }
                let missing: Int
                switch desc.missing { case .exact(let n): missing = n; case .below(let n): missing = n - 1 }
                let share = d.rows > 0 ? Double(missing) / Double(d.rows) : 1
                if share > fraction {
                    out.append((d.site, String(format: "%@ missing in %.0f%% of rows > %.0f%%", v, 100 * share, 100 * fraction)))
                    break
                }
            }
        }
        return out
    }

    /// Applies the missing-indicator method to a resolved model.
    public func apply(to spec: ModelSpec, variables: [String: VariableInfo]) throws -> ModelSpec {
        var s = spec
        for (v, value) in indicators.sorted(by: { $0.key < $1.key }) {
            guard variables[v]?.kind == .numeric else {
                throw SettingError("\(.missingIndicator) \(v): the missing-indicator method needs a numeric covariate")
            }
            var last: Int? = nil
            for i in s.fixed.indices where s.fixed[i].expr.variables.contains(v) {
                s.fixed[i].expr = s.fixed[i].expr.filling(v, with: value)
                last = i
            }
            guard let at = last else {
                throw SettingError("\(.missingIndicator) \(v): the formula's fixed effects do not use \(v)")
            }
            if case .value(let e) = s.response, e.variables.contains(v) {
                throw SettingError("\(.missingIndicator) \(v): the response cannot be filled in")
            }
            s.fixed.insert(DesignColumn(name: "missing(\(v))", expr: .isMissing(v)), at: at + 1)
        }
        return s
    }
}

extension Expr {
    /// The expression with every read of `v` as a number replaced by its filled value.
    func filling(_ v: String, with value: Double) -> Expr {
        switch self {
        case .variable(let x) where x == v: return .filled(v, with: value)
        case .unary(let f, let a): return .unary(f, a.filling(v, with: value))
        case .binary(let op, let a, let b): return .binary(op, a.filling(v, with: value), b.filling(v, with: value))
        default: return self
        }
    }
}
