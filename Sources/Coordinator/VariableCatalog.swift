// What the coordinator learns from `describe`: each variable's type and
// levels across sites, merged as R would see them in the pooled rows, and
// the checks that need every site's view (a variable missing at one site, a
// grouping factor whose codes recur at several sites).

import Protocol

/// Errors found by looking at all sites' descriptions together.
public struct CatalogError: Error, CustomStringConvertible, Equatable {
    public var message: String
    public var description: String { message }
}

public struct VariableCatalog: Sendable {
    public let sites: [SiteDescription]

    public init(_ sites: [SiteDescription]) { self.sites = sites }

    /// Merged metadata for the named variables (all when nil) present at all sites.
    public func variables(_ names: Set<String>? = nil) throws -> [String: VariableInfo] {
        guard let first = sites.first else { return [:] }
        var out: [String: VariableInfo] = [:]
        for v in first.variables where names?.contains(v.name) ?? true {
            let views = sites.compactMap { s in s.variables.first { $0.name == v.name } }
            guard views.count == sites.count else { continue }
            // A column that is entirely missing at a site says nothing about its type there.
            let informative = views.filter { $0.distinct > 0 }
            let kinds = Set(informative.map(\.type))
            if kinds.count > 1 {
                let numeric = zip(sites, views).filter { $0.1.type == .numeric && $0.1.distinct > 0 }.map(\.0.site)
                let text = zip(sites, views).filter { $0.1.type == .text && $0.1.distinct > 0 }.map(\.0.site)
                throw CatalogError(message: "variable \"\(v.name)\" is numeric at \(list(numeric)) but text at \(list(text)); declare its type in the agents' configuration (\"types\") so that all sites agree")
            }
            let kind = kinds.first ?? .numeric
            var levels: [String]? = []
            for view in informative {
                guard let l = view.levels else { levels = nil; break }
                for level in l.map(\.level) where !levels!.contains(level) { levels!.append(level) }
            }
            if var l = levels {
                if kind == .numeric { l.sort { (Double($0) ?? 0) < (Double($1) ?? 0) } }
                else { l.sort { $0.utf8.lexicographicallyPrecedes($1.utf8) } }
                levels = l
            }
            out[v.name] = VariableInfo(name: v.name, kind: kind, levels: levels)
        }
        return out
    }

    /// Every variable must exist at every site.
    public func requireVariables(_ names: [String]) throws {
        for name in names where name != "site" {
            let missingAt = sites.filter { s in !s.variables.contains { $0.name == name } }.map(\.site)
            if missingAt.count == sites.count {
                let known = sites.first.map { $0.variables.map(\.name).sorted().joined(separator: ", ") } ?? ""
                throw CatalogError(message: "unknown variable \"\(name)\": no site has it (variables: \(known))")
            }
            if !missingAt.isEmpty {
                throw CatalogError(message: "variable \"\(name)\" is missing at \(list(missingAt)); every site must provide the model's variables (or be left out of the fit)")
            }
        }
    }

    /// Refuses grouping factors whose codes recur at several sites: such a
    /// factor crosses sites, and the sites' random effects would not be
    /// separable. Identifiers with too many values to list are taken as
    /// site-local (DESIGN.md: `patient` means `site:patient`).
    public func requireNesting(_ spec: ModelSpec) throws {
        for term in spec.terms {
            // A grouping that names the site (site:ward, ward:site) is nested by construction.
            let parts = term.name.split(whereSeparator: { ":()".contains($0) }).map(String.init)
            guard case .withinSite(let vs) = term.grouping, !parts.contains("site") else { continue }
            // Nested if any component's codes are local to the sites (or not
            // listed: identifiers); crossing only if every component recurs.
            var shared: [String] = []
            var sitesInvolved: [String] = []
            var recurs = true
            for v in vs where recurs {
                var seenAt: [String: String] = [:]
                var sharedHere: [String] = [], involvedHere: [String] = []
                for s in sites {
                    guard let levels = s.variables.first(where: { $0.name == v })?.levels else { recurs = false; break }
                    for l in levels.map(\.level) {
                        if let other = seenAt[l], other != s.site {
                            sharedHere.append(l)
                            for x in [other, s.site] where !involvedHere.contains(x) { involvedHere.append(x) }
                        } else { seenAt[l] = s.site }
                    }
                }
                if sharedHere.isEmpty { recurs = false }
                if shared.isEmpty { shared = sharedHere; sitesInvolved = involvedHere }
            }
            if !recurs { continue }
            if !shared.isEmpty {
                let lhs = term.columns.map { $0.name == "(Intercept)" ? "1" : $0.name }
                let written = (lhs.first == "1" ? lhs : ["0"] + lhs).joined(separator: " + ")
                throw CatalogError(message: "grouping factor \"\(term.name)\" crosses sites: \(Set(shared).count) of its codes occur at more than one site (\(list(sitesInvolved))). fedmix fits factors nested within sites. If the codes are local to each site (equal codes are different groups), write (\(written) | site:\(term.name)); a factor shared by several sites cannot be fitted without pooling rows")
            }
        }
    }

    func list(_ names: [String]) -> String {
        names.count <= 5 ? names.joined(separator: ", ") : names.prefix(5).joined(separator: ", ") + " and \(names.count - 5) more"
    }
}
