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
    /// separable. A site's codes are compared through the keyed hashes it
    /// sent (`LevelHashes`, any number of levels) or, without them, through
    /// the levels `describe` lists. A factor crosses sites only if every
    /// component's codes recur at several sites (a:b is nested as soon as
    /// a's or b's codes are local). With `complete`, a factor that cannot be
    /// checked (a site sent neither levels nor hashes of a component) is
    /// refused too; without it, it is passed over (a describe without hashes,
    /// as `fedmix explain` runs it; `Analysis.fit` always checks completely).
    /// Grouping factors written plainly (`(1 | year)`) whose codes recur at
    /// several sites are crossed with them: their groups are shared, with
    /// the union of the levels the sites list as the agreed coding (sites
    /// list only levels with at least min_cell rows). A factor whose levels
    /// some site does not list is left for `requireNesting`, which refuses
    /// it as ambiguous.
    public func resolveCrossed(_ spec: ModelSpec) throws -> ModelSpec {
        var out = spec
        for (t, term) in spec.terms.enumerated() {
            guard let vs = Self.checkedComponents(term), vs.count == 1, case .recurs = sharing(vs[0]),
                  let levels = try variables([vs[0]])[vs[0]]?.levels, !levels.isEmpty else { continue }
            out.terms[t].grouping = .crossed(vs[0], levels: levels)
        }
        return out
    }

    public func requireNesting(_ spec: ModelSpec, complete: Bool = false) throws {
        for term in spec.terms {
            guard let vs = Self.checkedComponents(term) else { continue }
            var recurring: (codes: Int, sites: [String])? = nil
            var unknown: (variable: String, sites: [String])? = nil
            var local = false
            for v in vs {
                switch sharing(v) {
                case .local: local = true
                case .recurs(let n, let at): if recurring == nil { recurring = (n, at) }
                case .unknown(let at): if unknown == nil { unknown = (v, at) }
                }
                if local { break }
            }
            if local { continue }
            let lhs = term.columns.map { $0.name == "(Intercept)" ? "1" : $0.name }
            let written = (lhs.first == "1" ? lhs : ["0"] + lhs).joined(separator: " + ")
            if let u = unknown {
                guard complete else { continue }
                throw CatalogError(message: "cannot check that grouping factor \"\(term.name)\" is nested in the sites: \(list(u.sites)) sent neither the levels of \"\(u.variable)\" nor their keyed hashes (an agent older than this coordinator, or a numeric variable whose values are not whole numbers). fedmix fits factors nested within sites and refuses one it cannot check, since a factor shared by several sites would silently be fitted as nested. If the codes are local to each site (equal codes are different groups), write (\(written) | site:\(term.name))")
            }
            if let r = recurring, vs.count == 1 {
                // Sites list at most 20 values of a numeric variable, whatever max_listed_levels says.
                let numeric = (try? variables([vs[0]])[vs[0]]?.kind) == .numeric
                let listing = numeric
                    ? "declare \"\(vs[0])\" as text in each agent's \"types\" (sites list at most 20 values of a numeric variable) with disclosure.max_listed_levels at least its number of codes"
                    : "each agent's disclosure.max_listed_levels at least its number of codes"
                throw CatalogError(message: "grouping factor \"\(term.name)\" is ambiguous: \(r.codes) of its codes occur at more than one site (\(list(r.sites))), and the sites do not list its levels (more distinct codes than they list, as identifiers have), so fedmix cannot tell whether equal codes at two sites are one group or two. If the codes are local to each site (patient 1 at two hospitals are two patients), write (\(written) | site:\(term.name)) or (\(written) | site/\(term.name)). If they name the same groups at every site (a surgeon who operates at several hospitals), the factor is crossed with the sites, written (\(written) | \(term.name)): the sites must then list its levels (\(listing))")
            }
            if let r = recurring {
                throw CatalogError(message: "grouping factor \"\(term.name)\" crosses sites: \(r.codes) of its codes occur at more than one site (\(list(r.sites))). fedmix fits a crossed factor written as one variable, (\(written) | f), not an interaction of recurring variables. If the codes are local to each site (equal codes are different groups), write (\(written) | site:\(term.name)); otherwise make one variable of the combination at the sites and write (\(written) | that variable)")
            }
        }
    }

    /// The variables whose codes decide whether a term's factor is nested in
    /// the sites, or nil when it is nested by construction (it names `site`).
    static func checkedComponents(_ term: RandomTerm) -> [String]? {
        // A grouping that names the site (site:ward, ward:site) is nested by construction.
        let parts = term.name.split(whereSeparator: { ":()".contains($0) }).map(String.init)
        guard case .withinSite(let vs) = term.grouping, !parts.contains("site") else { return nil }
        return vs
    }

    /// The variables `requireNesting` compares across sites for a model.
    public static func nestingVariables(_ spec: ModelSpec) -> [String] {
        var out: [String] = []
        for t in spec.terms { for v in checkedComponents(t) ?? [] where !out.contains(v) { out.append(v) } }
        return out
    }

    /// Whether every site's description carries level hashes (a describe that asked for them).
    public var hasLevelHashes: Bool { !sites.isEmpty && sites.allSatisfy { $0.levelHashes != nil } }

    enum Sharing: Equatable {
        /// No code occurs at two sites.
        case local
        /// `codes` distinct codes occur at more than one site; the sites involved, in site order.
        case recurs(codes: Int, sites: [String])
        /// These sites sent neither the levels nor their hashes.
        case unknown(sites: [String])
    }

    /// How a variable's codes compare across sites. When the sites sent keyed
    /// hashes under one salt, every site's codes are compared as hashes (a
    /// site that listed its levels but sent no hashes of them has its levels
    /// hashed here under the same salt); otherwise the listed levels are compared.
    func sharing(_ v: String) -> Sharing {
        let salts = Set(sites.compactMap { $0.levelHashes?.salt })
        let hasher = salts.count == 1 ? try? LevelHasher(salt: salts.first!, variable: v) : nil
        var sets: [Set<String>] = []
        var unknownAt: [String] = []
        for s in sites {
            if hasher != nil, let h = s.levelHashes?.variables[v] {
                sets.append(Set(h))
            } else if let levels = s.variables.first(where: { $0.name == v })?.levels?.map(\.level) {
                sets.append(hasher.map { Set($0.hashes(levels)) } ?? Set(levels))
            } else {
                unknownAt.append(s.site)
            }
        }
        if !unknownAt.isEmpty { return .unknown(sites: unknownAt) }
        var firstSite: [String: Int] = [:]
        var shared = Set<String>()
        var involved = Set<Int>()
        for (k, codes) in sets.enumerated() {
            for c in codes {
                if let j = firstSite[c] { shared.insert(c); involved.insert(j); involved.insert(k) } else { firstSite[c] = k }
            }
        }
        return shared.isEmpty ? .local : .recurs(codes: shared.count, sites: involved.sorted().map { sites[$0].site })
    }

    func list(_ names: [String]) -> String {
        names.count <= 5 ? names.joined(separator: ", ") : names.prefix(5).joined(separator: ", ") + " and \(names.count - 5) more"
    }
}
