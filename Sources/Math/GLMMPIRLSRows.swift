// One PIRLS point's per-row quantities at a site, computed in one pass over
// the rows: η = o + Xβ + Z b (the fixed part taken once per evaluation, as it
// does not change while the modes move), μ and dμ/dη (from one exp for the
// logit), each row's deviance term and its Fisher weight and working
// residual. PIRLS keeps one of these for the whole solve: a trial point
// writes over the accepted one (GLMMSite.modes), so no iteration allocates
// per-row arrays.

import Foundation

struct PIRLSRows {
    var eta: [Double]
    var mu: [Double]
    var muEta: [Double]
    var deviance: [Double]
    var weights: [Double]
    /// Empty when not kept: the tail-only layout sums ZᵀW r in the pass
    /// itself and never reads them again (at 10 million rows, 80 MB less).
    var residuals: [Double]
    /// Σ deviance, summed in row order.
    var total = 0.0
    /// When the site has only few-level factors (a dense tail, no per-level
    /// blocks): ZᵀWZ (td × td) and ZᵀW r summed in the same pass, row by row.
    var tt: [Double]
    var tw: [Double]

    init(rows: Int, tailDimension td: Int, keepResiduals: Bool = true) {
        let zero = [Double](repeating: 0, count: rows)
        eta = zero; mu = zero; muEta = zero; deviance = zero; weights = zero; residuals = keepResiduals ? zero : []
        tt = [Double](repeating: 0, count: td * td); tw = [Double](repeating: 0, count: td)
    }
}

extension GLMMSite {
    /// Fills `out` at the modes u: η_i = fixed_i + Σ_f z_if b_f (each row's
    /// terms added in that order: the fixed part, then factor by factor), then the
    /// row's mean, slope, deviance, weight and residual.
    /// With `tailOffsets` (the tail-only layout: each factor's offset in the
    /// tail) the pass also sums the tail's blocks, as `weightedBlocks` would.
    func rowPass(_ u: [Double], theta: [Double], fixed: [Double], tailOffsets: [Int]?, into out: inout PIRLSRows) {
        let b = effects(u, theta: theta)
        let family = data.family, rows = data.rows, nf = b.count
        let dims = (0..<nf).map { data.z[$0].count / max(rows, 1) }
        let zs = data.z, lvs = data.levels, ys = data.y, ns = data.n
        let td = out.tw.count, width = dims.reduce(0, +)
        let scratch = Scratch()
        defer { scratch.free() }
        let cols = scratch.ints(max(width, 1)), vals = scratch.doubles(max(width, 1))
        var total = 0.0
        for k in out.tt.indices { out.tt[k] = 0 }
        for k in out.tw.indices { out.tw[k] = 0 }
        out.tt.withUnsafeMutableBufferPointer { tt in
        out.tw.withUnsafeMutableBufferPointer { tw in
        out.eta.withUnsafeMutableBufferPointer { eta in
        out.mu.withUnsafeMutableBufferPointer { mu in
        out.muEta.withUnsafeMutableBufferPointer { muEta in
        out.deviance.withUnsafeMutableBufferPointer { dev in
        out.weights.withUnsafeMutableBufferPointer { w in
        out.residuals.withUnsafeMutableBufferPointer { res in
            let keepResiduals = res.count == rows
            /// Row i at η = e: its mean, slope, deviance, weight and residual
            /// stored and its deviance summed; the weight and residual returned
            /// for the tail's sums. The one place both loops below finish a row.
            @inline(__always) func finish(_ i: Int, _ e: Double, y: Double, n: Double) -> (w: Double, r: Double) {
                let (m, d) = family.meanAndSlope(e)
                let di = family.minusTwoLogLik(y: y, n: n, mu: m)
                let (wi, ri, _) = family.weightAndResidual(y: y, n: n, mu: m, muEta: d)
                eta[i] = e; mu[i] = m; muEta[i] = d; dev[i] = di; w[i] = wi
                if keepResiduals { res[i] = ri }
                total += di
                return (wi, ri)
            }
            if nf == 1 && (tailOffsets == nil || width == 1) {
                // One factor: the same row terms in the same order, from raw pointers (no nested-array access per row).
                let r = dims[0], to = tailOffsets?[0] ?? 0
                zs[0].withUnsafeBufferPointer { z in
                lvs[0].withUnsafeBufferPointer { lv in
                b[0].withUnsafeBufferPointer { b0 in
                fixed.withUnsafeBufferPointer { fx in
                ys.withUnsafeBufferPointer { y in
                ns.withUnsafeBufferPointer { n in
                    for i in 0..<rows {
                        var e = fx[i]
                        let l = lv[i]
                        for a in 0..<r { e += z[i * r + a] * b0[l * r + a] }
                        let (wi, ri) = finish(i, e, y: y[i], n: n[i])
                        guard tailOffsets != nil else { continue }
                        // width 1: row i's single tail entry, as the general loop below sums it
                        let col = to + l, v = z[i]
                        let wb = wi * v
                        if wb == 0 { continue }
                        tw[col] += wb * ri
                        tt[col + col * td] += v * wb
                    }
                } } } } } }
                return
            }
            for i in 0..<rows {
                var e = fixed[i]
                for f in 0..<nf {
                    let r = dims[f], l = lvs[f][i]
                    for a in 0..<r { e += zs[f][i * r + a] * b[f][l * r + a] }
                }
                let (wi, ri) = finish(i, e, y: ys[i], n: ns[i])
                guard let tailOffsets else { continue }
                // Row i's z entries and their positions in the tail, then its terms of ZᵀWZ and ZᵀW r.
                var k = 0
                for f in 0..<nf {
                    let df = dims[f], base = tailOffsets[f] + lvs[f][i] * df
                    for a in 0..<df { cols[k] = base + a; vals[k] = zs[f][i * df + a]; k += 1 }
                }
                for c in 0..<width {
                    let wb = wi * vals[c]
                    if wb == 0 { continue }
                    tw[cols[c]] += wb * ri
                    for a in 0..<width { tt[cols[a] + cols[c] * td] += vals[a] * wb }
                }
            }
        } } } } } } } }
        out.total = total
    }
}

extension GLMFamily {
    /// μ = g⁻¹(η) and dμ/dη together. For the logit both come from
    /// o = exp(−|η|): μ′ = o/(1+o)² exactly as `muEta` gives it, and μ =
    /// o/(1+o) (η < 0, as `mu` gives it) or 1/(1+o) (η ≥ 0); other links
    /// call `mu` and `muEta`.
    @inline(__always) func meanAndSlope(_ eta: Double) -> (mu: Double, muEta: Double) {
        guard link == .logit, abs(eta) <= Self.thresh else { return (mu(eta), muEta(eta)) }
        let o = Foundation.exp(-abs(eta))
        return (eta < 0 ? o / (1 + o) : 1 / (1 + o), o / ((1 + o) * (1 + o)))
    }
}
