import Math

extension ModelSpec {
    /// The distinct groupings in order of first use; terms sharing a grouping
    /// form one factor block. Both sides derive the θ layout from this, so
    /// it is defined once, here.
    public var factorGroupings: [Grouping] {
        var out: [Grouping] = []
        for t in terms where !out.contains(t.grouping) { out.append(t.grouping) }
        return out
    }

    /// The θ layout of the model's random effects.
    public var covarianceStructure: CovarianceStructure {
        let groupings = factorGroupings
        return CovarianceStructure(terms: terms.map {
            .init(dimension: $0.columns.count, factor: groupings.firstIndex(of: $0.grouping)!)
        })
    }

    /// Index of the factor grouped by the site itself, if any.
    public var siteFactorIndex: Int? { factorGroupings.firstIndex(of: .site) }

    /// True when every term is grouped by the site: the sites then send their
    /// θ-free sums once and the coordinator iterates alone.
    public var allTermsGroupedBySite: Bool { terms.allSatisfy { $0.grouping == .site } }

    /// Number of fixed effects p.
    public var fixedCount: Int { fixed.count }
}

extension ModelSpec {
    /// Whether some term is grouped by a factor shared by sites.
    public var hasCrossedTerms: Bool { terms.contains { $0.grouping.isCrossed } }

    /// The model a site builds its own random effects from: the crossed
    /// terms removed (their effects are global; the site treats their
    /// columns as leading columns of [X y] and sends its Schur complement
    /// onto them). The model itself when it has no crossed term.
    public var localModel: ModelSpec {
        guard hasCrossedTerms else { return self }
        var s = self
        s.terms = terms.filter { !$0.grouping.isCrossed }
        return s
    }

    /// θ index in the full model of each θ of `localModel`, in order
    /// (terms keep their order, so each term's θ keep theirs).
    public var localThetaIndices: [Int] {
        var out: [Int] = [], o = 0
        for t in terms {
            if !t.grouping.isCrossed { out += Array(o..<(o + t.thetaCount)) }
            o += t.thetaCount
        }
        return out
    }

    /// The θ of `localModel` taken from the full model's θ (θ itself
    /// when the model has no crossed term).
    public func localTheta(_ theta: [Double]) -> [Double] {
        hasCrossedTerms ? localThetaIndices.map { theta[$0] } : theta
    }

    /// The crossed factors in `factorGroupings` order: the factor index,
    /// the variable, its agreed levels and the factor's columns (its terms'
    /// columns in term order, as the factor's r random effects per level).
    public var crossedFactors: [(factor: Int, variable: String, levels: [String], columns: [DesignColumn])] {
        factorGroupings.enumerated().compactMap { f, g in
            guard case .crossed(let v, let levels) = g else { return nil }
            return (f, v, levels, terms.filter { $0.grouping == g }.flatMap(\.columns))
        }
    }
}
