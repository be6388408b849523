// What a request will cost the agent, computed before the work starts, so
// that a certificate holder cannot make one request take minutes of CPU,
// gigabytes of memory and hundreds of megabytes of audit log.
//
// Work is counted in multiply-adds; jet arithmetic (values carried with
// their first and second derivatives in θ) costs 4 × the jet's width per
// operation (width 1 + m + m(m+1)/2 for m parameters at order 2; the 4 is
// measured: a product of two jets takes about three multiply-adds per
// number, plus the loops around it). The figures follow the code they
// predict (Sources/Math); measured on the shared 2-core build machine
// (NetworkThreatTests.testLegitimateCasesAreFarBelowTheDefaultBudgets, debug
// build), LMM evaluations ran at 5e7–1e8 units per second and GLMM
// evaluations with exact derivatives at 1e7–5e7 (their per-row constants
// are the least certain part: PIRLS iterations vary with the start).
//
// LMM evaluate (LMMSite.factorize) at order k, m = |θ|, w = width(m, k),
//   W = p + 1 columns of [X y], td = the dense tail's dimension:
//   - per level l of the first (largest) factor, in its own θ (width w₁),
//     with r its dimension and c_l the tail columns the level meets:
//       w₁ · r · (r + W + c_l)²
//   - the dense tail in all of θ: w · (2 td³ + td³/3 + 3 td² W + td W²)
//   answer: (W² + 1) · w numbers.
// GLMM evaluate (GLMMSite.evaluate; GLMMExactDerivatives.swift), n = |θ| + p,
//   w = 4·width(n, order), w₁ = 4·width(n, 1) (jet operations), R rows, r = Σ r_f the row's
//   random-effects width, k = p + r + 1, q the site's random effects:
//   - one PIRLS solve, about 10 iterations × (R k² + td³ + Σ_f levels_f r_f³),
//     and the value (R · nAGQ · k);
//   - order ≥ 1, the mode equation's derivatives: R · 2r · w₁ (first order)
//     and R · 2r · w (second), and width(n, order) solves with the blocked
//     factor (q r + td² each);
//   - the objective as a jet: R · w · (r² + r + 4), and its log-determinant
//     w · (4 Σ_f levels_f r_f³ + td³); with nAGQ > 1, R · nAGQ · 3w more.
//   A nested chain (GLMMSiteData.chain) leaves only the factors outside it
//   in td, and its elimination costs Σ_chain levels · r (r + C)² (C: the
//   coarser effects a level meets) wherever td³ is counted.
//   answer: w numbers.
// Prepare: rows · (p + 1 + Σr)² to build the sums.
// Finalize: one evaluation at order 0.

import Foundation
import Math
import Protocol

/// A request's estimated work and answer size.
public struct RequestCost: Sendable, Equatable, CustomStringConvertible {
    /// Estimated multiply-adds.
    public var work: Double
    /// Estimated bytes of the answer line.
    public var answerBytes: Double

    /// Bytes per number on the wire: shortest round-trip decimal, a comma,
    /// and room for a sign and an exponent.
    static let bytesPerNumber = 24.0

    public var description: String {
        String(format: "work %.3g multiply-adds, answer about %.3g bytes", work, answerBytes)
    }

    /// The first budget this cost exceeds, as the error the peer gets.
    func refusal(_ limits: AgentLimits, what: String) -> SiteError? {
        if answerBytes > Double(limits.maxAnswerBytes) {
            return .invalid(String(format: "the %@ would need an answer of about %.0f bytes; this site sends at most %d (limits.max_answer_bytes). Use fewer fixed-effects columns or covariance parameters, or a lower derivative order", what, answerBytes, limits.maxAnswerBytes))
        }
        if work > limits.maxWorkPerRequest {
            return .invalid(String(format: "the %@ would take about %.3g multiply-adds; this site does at most %.3g per request (limits.max_work_per_request). Use fewer columns, covariance parameters or quadrature points, or a lower derivative order", what, work, limits.maxWorkPerRequest))
        }
        return nil
    }

    static func jetWidth(_ m: Int, order: Int) -> Double {
        Double(JetSpace.width(parameters: m, order: order))
    }

    /// An LMM evaluation (`evaluate` at `order`, or `finalize` at order 0).
    public static func lmmEvaluate(_ b: SiteBlocks, structure: CovarianceStructure, order: Int) -> RequestCost {
        let m = structure.thetaCount
        let w = 4 * jetWidth(m, order: order)
        let W = Double(b.width), td = Double(b.tailDimension)
        var work = 0.0
        if let lb = b.first {
            let w1 = 4 * jetWidth(structure.factorParameters(lb.factor).count, order: order)
            let r = Double(lb.dimension)
            for l in 0..<lb.levels {
                let c = Double(lb.crossStart[l + 1] - lb.crossStart[l])
                work += w1 * r * (r + W + c) * (r + W + c)
            }
        }
        for f in b.nested?.factors ?? [] {   // NestedElimination: per level, products of r × (r + W + C) in all of θ
            let r = Double(f.dimension), c = Double(f.crossWidth)
            work += w * Double(f.levels) * r * (r + W + c) * (r + W + c)
        }
        work += w * (2 * td * td * td + td * td * td / 3 + 3 * td * td * W + td * W * W + td * td)
        let answer = (W * W + 1) * jetWidth(m, order: order) * bytesPerNumber + 256
        return RequestCost(work: work, answerBytes: answer)
    }

    /// A low-rank evaluation (LMMSite.lowRank): the same factorization,
    /// answering V_kᵀ (own effects × width) instead of width².
    public static func lmmLowRank(_ b: SiteBlocks, structure: CovarianceStructure, order: Int) -> RequestCost {
        let dense = lmmEvaluate(b, structure: structure, order: order)
        let own = Double((b.first.map { $0.levels * $0.dimension } ?? 0) + b.tailDimension)
        let answer = (own * Double(b.width) + 1) * jetWidth(structure.thetaCount, order: order) * bytesPerNumber + 256
        return RequestCost(work: dense.work, answerBytes: answer)
    }

    /// One GLMM evaluation with derivatives up to `order` in (θ, β): one
    /// PIRLS solve, then the exact derivatives' passes over the rows.
    public static func glmmEvaluate(_ d: GLMMSiteData, order: Int, nAGQ: Int) -> RequestCost {
        let s = d.structure
        let n = s.thetaCount + d.p
        let dims = (0..<s.factorCount).map { Double(s.factorDimension($0)) }
        let r = dims.reduce(0, +)
        let sizes = (0..<s.factorCount).map { Double(d.levelCounts[$0]) * dims[$0] }
        let largest = sizes.max() ?? 0
        let q = sizes.reduce(0, +)
        var td = q - largest, dense = td * td * td
        if let chain = d.chain {
            td = q - chain.reduce(0) { $0 + sizes[$1] }
            dense = td * td * td
            var coarser = td
            for f in chain.reversed() {
                dense += Double(d.levelCounts[f]) * dims[f] * (dims[f] + coarser) * (dims[f] + coarser)
                coarser += dims[f]
            }
        }
        var levelWork = 0.0
        for f in 0..<s.factorCount { levelWork += Double(d.levelCounts[f]) * dims[f] * dims[f] * dims[f] }
        let p = Double(d.p), rows = Double(d.rows), k = p + r + 1
        var work = 10 * (rows * k * k + dense + levelWork) + rows * Double(max(nAGQ, 1)) * k
        if order >= 1 {
            let w = 4 * jetWidth(n, order: order), w1 = 4 * jetWidth(n, order: 1)
            let solve = q * max(dims.max() ?? 1, 1) + td * td
            work += rows * 2 * r * w1 + (order >= 2 ? rows * 2 * r * w : 0) + jetWidth(n, order: order) * solve
            work += rows * w * (r * r + r + 4) + w * (4 * levelWork + dense)
            if nAGQ > 1 { work += rows * Double(nAGQ) * 3 * w }
        }
        let answer = jetWidth(n, order: order) * bytesPerNumber + 256
        return RequestCost(work: work, answerBytes: answer)
    }

    /// Building a model's sums at prepare, before the model frame exists.
    public static func prepare(_ spec: ModelSpec, rows: Int) -> RequestCost {
        let columns = Double(spec.fixedCount + 1 + spec.terms.reduce(0) { $0 + $1.columns.count })
        // The answer: at most the θ-free sums of the design's columns.
        return RequestCost(work: Double(rows) * columns * columns, answerBytes: columns * columns * bytesPerNumber + 4096)
    }
}

extension RequestCost {
    /// One GEE round: D and r per row, (φR)⁻¹ applied per cluster (dense
    /// for ar1, n³), and with a bread the leverage corrections (n³ per
    /// cluster, then p×p eigenvectors, about 30 p³, per cluster).
    public static func geeStep(_ site: GEESite, corrections: Bool) -> RequestCost {
        let p = Double(site.rows.p)
        var work = Double(site.rows.rows) * (p + 1) * (p + 2)
        for c in site.members {
            let n = Double(c.count)
            if site.structure == .ar1 { work += n * n * n / 3 + n * n * (p + 1) }
            if site.structure != .independence { work += n * n / 2 }
            if corrections { work += 30 * p * p * p }
        }
        return RequestCost(work: work, answerBytes: (4 * p * p + p + 10) * bytesPerNumber)
    }
}
