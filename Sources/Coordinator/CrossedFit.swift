// The coordinator's side of crossed factors (DESIGN.md, "Crossed factors";
// Math/CrossedElimination.swift): where each site's leading columns sit in
// the global crossed effects, the conditional modes of those effects at
// the optimum, and what each site needs of them to finalize.

import Math
import Protocol

extension FitSession {
    /// The crossed effects' layout from the prepare answers (nil for a model
    /// without crossed factors). A site must report, per crossed factor,
    /// agreed level indices in range, as many as its group count for the
    /// factor's terms.
    func crossedLayout() throws -> CrossedLayout? {
        let spec = self.spec
        guard spec.hasCrossedTerms else { return nil }
        let crossed = spec.crossedFactors, groupings = spec.factorGroupings
        var present: [[[Int]]] = []
        for (site, p) in zip(sites, prepared) {
            guard let levels = p.summary.crossedLevels, levels.count == crossed.count,
                  zip(levels, crossed).allSatisfy({ l, c in l.allSatisfy { $0 < c.levels.count } }) else {
                throw SiteFailure(site: site, message: "did not report the crossed factors' levels it has (an agent older than this coordinator, or a faulty one)")
            }
            for (t, term) in spec.terms.enumerated() {
                if let c = crossed.firstIndex(where: { groupings[$0.factor] == term.grouping }), p.summary.groups[t] != levels[c].count {
                    throw SiteFailure(site: site, message: "reported \(p.summary.groups[t]) levels of \(term.name) but listed \(levels[c].count)")
                }
            }
            present.append(levels)
        }
        return CrossedLayout(structure: structure, crossed: crossed.map { ($0.factor, $0.levels.count) },
                             presentLevels: present, localTheta: spec.localThetaIndices)
    }
}

/// The crossed effects at the optimum: b_G = Λ_G u_G and P with σ² P their
/// conditional covariance (all crossed effects, in u_G order).
struct CrossedModes {
    var layout: CrossedLayout
    var effects: [Double]
    var covariance: Matrix
    /// Per site, what P adds to its effects' conditional covariance, when the
    /// coordinator holds the sites' θ-free sums (`withSiteTerms`); sent
    /// instead of P at the site's levels (q_k² numbers).
    var siteTerms: [[Double]]? = nil
    /// P's diagonal, when P itself was not formed (a crossed GLMM's level
    /// form, CrossedGLMMLevelSystem); `covariance` is then empty.
    var variances: [Double]? = nil
    /// Per site, X P Xᵀ (r × r, X its site effects' rows of V_kᵀ), when the
    /// sites answered `low_rank` (`withSiteProducts`); sent instead of P.
    var siteProducts: [[Double]]? = nil

    /// P at site k's leading columns (column-major).
    func covariance(site k: Int) -> [Double] {
        let cols = layout.siteColumns[k]
        var v: [Double] = []
        v.reserveCapacity(cols.count * cols.count)
        for j in cols { for i in cols { v.append(covariance[i, j]) } }
        return v
    }

    /// What site k is sent to finalize: b_G at its own leading columns, and
    /// P there or the term it makes.
    func finalizeParts(site k: Int) -> (effects: [Double], covariance: [Double]?, term: [Double]?) {
        let b = layout.siteColumns[k].map { effects[$0] }
        if let siteTerms { return (b, nil, siteTerms[k]) }
        if siteProducts != nil { return (b, nil, nil) }
        return (b, covariance(site: k), nil)
    }

    /// The same modes with each site's X P Xᵀ formed here from its V_kᵀ at
    /// the optimum: the site effects' rows are its last r (the site's own
    /// factor is last in its elimination, SiteBlocksBuilder), r = `siteDimension`.
    func withSiteProducts(_ virtual: [LMMLowRankContribution], siteDimension r: Int) -> CrossedModes {
        var out = self
        out.siteProducts = virtual.enumerated().map { k, v in
            let q = layout.siteColumns[k].count, p = covariance(site: k), x = v.factor, o = x.rows - r
            var xp = [Double](repeating: 0, count: r * q)   // X P, r × q
            for j in 0..<q { for c in 0..<q { let pcj = p[c + j * q]; for i in 0..<r { xp[i + j * r] += x.value(o + i, c) * pcj } } }
            var out = [Double](repeating: 0, count: r * r)
            for j in 0..<r { for i in 0..<r { for c in 0..<q { out[i + j * r] += xp[i + c * r] * x.value(o + j, c) } } }
            return out
        }
        return out
    }

    /// The same modes with each site's term formed here from its sums (LMMSite.crossedCovarianceTerm).
    func withSiteTerms(_ blocks: [SiteBlocks], localStructure: CovarianceStructure, localTheta: [Double]) throws -> CrossedModes {
        var out = self
        out.siteTerms = try blocks.indices.map { k in
            let q = layout.siteColumns[k].count
            return try LMMSite.crossedCovarianceTerm(blocks[k], structure: localStructure, theta: localTheta,
                                                     crossedCovariance: Matrix(rows: q, cols: q, data: covariance(site: k)))?.data ?? []
        }
        return out
    }

    /// The result's rows: each crossed level's effects and conditional SDs.
    func results(spec: ModelSpec, sigma: Double) -> [FitResult.CrossedEffect] {
        var out: [FitResult.CrossedEffect] = []
        for (c, f) in zip(spec.crossedFactors, layout.factors) {
            let names = c.columns.map(\.name)
            let r = names.count
            let term = spec.terms.first { $0.grouping == spec.factorGroupings[c.factor] }!.name
            for (l, level) in c.levels.enumerated() {
                let o = f.offset + l * r
                var e: [String: Double] = [:], sd: [String: Double] = [:]
                for a in 0..<r {
                    e[names[a]] = effects[o + a]
                    sd[names[a]] = sigma * (variances?[o + a] ?? covariance[o + a, o + a]).squareRoot()
                }
                out.append(.init(group: term, level: level, effects: e, condSD: sd))
            }
        }
        return out
    }
}
