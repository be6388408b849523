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
