// One site's piece of a GLMM with factors crossed across sites (README,
// "Crossed factors in GLMMs"). The joint conditional mode of lme4's Laplace
// approximation splits by site: given (θ, β) and the crossed effects b_G at
// this site's levels, the site finds its own (site-local) modes û_L by PIRLS
// with Z_G b_G as an offset, and returns
//     P_k(b_G)   = Σ dev_i + ‖û_L‖²                    (profiled over u_L)
//     ∇P_k       = −2 Z_Gᵀ W r                          (envelope theorem)
//     ∇²P_k / 2  = Z_GᵀWZ_G − Z_GᵀWZ_LΛ_L H_ss⁻¹ Λ_LᵀZ_LᵀWZ_G
//     log|H_ss|,  H_ss = Λ_LᵀZ_LᵀWZ_LΛ_L + I,
// with W the PIRLS weights at û_L. For a canonical link W is the observed
// information, so ∇²P_k is the exact Hessian, and the coordinator's
// Λ_Gᵀ(Σ ∇²P_k / 2)Λ_G + I is both ½ of its Newton matrix and the Schur
// complement S of lme4's H onto u_G: log|H| = Σ log|H_ss| + log|S|.

import Foundation
import Synchronization

/// The crossed factors' columns of a site's rows: for each row and crossed
/// factor, the site's leading column of the row's level and its z values.
public struct CrossedRowColumns: Sendable {
    public struct Factor: Sendable {
        /// Random effects per level.
        public var dimension: Int
        /// Per row: the leading column of its level's first effect.
        public var column: [Int]
        /// rows × dimension z values, row-major.
        public var z: [Double]
        public init(dimension: Int, column: [Int], z: [Double]) { self.dimension = dimension; self.column = column; self.z = z }
    }
    public var factors: [Factor]
    /// Leading columns (crossed effects at this site's levels).
    public var width: Int
    public init(factors: [Factor], width: Int) { self.factors = factors; self.width = width }

    /// Z_G b_G for each row.
    func linearPart(_ effects: [Double], rows: Int) -> [Double] {
        var out = [Double](repeating: 0, count: rows)
        for f in factors {
            let r = f.dimension
            for i in 0..<rows {
                var v = 0.0
                for a in 0..<r { v += f.z[i * r + a] * effects[f.column[i] + a] }
                out[i] += v
            }
        }
        return out
    }
}

/// One point's answer (GLMMCrossedSite.piece).
public struct CrossedPiece: Sendable, Equatable {
    /// Σ dev + ‖û_L‖² at the site's local modes.
    public var value: Double
    /// ∂/∂b_G (width values).
    public var gradient: [Double]
    /// ∂²/∂b_G² (width², column-major, symmetric).
    public var hessian: [Double]
    /// log|H_ss|.
    public var logDet: Double
    /// `largestWeightShare` at the site's modes. Not on the wire; the site
    /// checks it (max_row_share).
    public var largestRowShare: Double = 0
    public init(value: Double, gradient: [Double], hessian: [Double], logDet: Double) {
        self.value = value; self.gradient = gradient; self.hessian = hessian; self.logDet = logDet
    }
}

/// A site's rows of a GLMM with crossed factors: `local` holds the rows with
/// the site-local random effects only (the model's offset as its offset).
public final class GLMMCrossedSite: Sendable {
    public let local: GLMMSiteData
    public let crossed: CrossedRowColumns
    /// The model's θ index of each θ of the local structure.
    public let localTheta: [Int]
    /// The last own modes, to start the next PIRLS from.
    let warm = Mutex<[Double]?>(nil)

    public init(local: GLMMSiteData, crossed: CrossedRowColumns, localTheta: [Int]) {
        self.local = local; self.crossed = crossed; self.localTheta = localTheta
    }

    /// Whether the family's PIRLS weights are the observed information (then
    /// the returned Hessian is exact and the coordinator's Newton on u_G converges quadratically).
    public static func isCanonical(_ family: GLMFamily) -> Bool {
        (family.distribution == .binomial && family.link == .logit) || (family.distribution == .poisson && family.link == .log)
    }

    /// The local evaluator with Z_G b_G added to the offset.
    func shifted(_ effects: [Double]) -> GLMMSite {
        var d = local
        let extra = crossed.linearPart(effects, rows: d.rows)
        for i in 0..<d.rows { d.offset[i] += extra[i] }
        let site = GLMMSite(d)
        // The coordinator's F is differenced: modes tighter than PIRLS's
        // 1e-11, yet above the rounding of the step itself (~1e-13).
        site.modeTolerance = 1e-12
        return site
    }

    /// The largest share one row holds of the PIRLS weights Σ w, over all the
    /// site's rows and over each crossed level's rows (1 when they vanished):
    /// an honest fit spreads them, a crafted β steep in one column puts them
    /// on the row nearest its threshold, whose answer would then be that row's.
    /// Without `eta`, at the linear predictor before the site's own modes
    /// (Xβ + Z_G b_G + offset), so a crafted point is refused before any work.
    public func largestWeightShare(beta: [Double], effects: [Double]) -> Double {
        let extra = crossed.linearPart(effects, rows: local.rows)
        let eta = zip(GLMFamily.linearPredictor(x: local.x, p: local.p, beta: beta, offset: local.offset), extra).map { $0 + $1 }
        return largestWeightShare(eta: eta)
    }

    /// Each crossed factor's levels group the rows (by the first leading column of their level).
    func largestWeightShare(eta: [Double]) -> Double {
        local.family.largestWeightShare(y: local.y, n: local.n, eta: eta, groups: crossed.factors.map(\.column))
    }

    /// The site's piece at (θ, β) (the model's θ) and b_G at its levels.
    public func piece(theta: [Double], beta: [Double], effects: [Double]) throws -> CrossedPiece {
        precondition(effects.count == crossed.width, "one crossed effect per leading column")
        let thetaL = localTheta.map { theta[$0] }
        let site = shifted(effects)
        let m = try site.modes(theta: thetaL, beta: beta, start: warm.withLock { $0 })
        warm.withLock { $0 = m.u }
        let q = crossed.width, n = local.rows
        var gradient = [Double](repeating: 0, count: q)
        var rootWeights = [Double](repeating: 0, count: n)
        for i in 0..<n {
            let (w, r, _) = local.family.weightAndResidual(y: local.y[i], n: local.n[i], eta: m.eta[i])
            rootWeights[i] = w.squareRoot()
            for f in crossed.factors {
                for a in 0..<f.dimension { gradient[f.column[i] + a] -= 2 * w * r * f.z[i * f.dimension + a] }
            }
        }
        let share = largestWeightShare(eta: m.eta)
        let schur = try weightedSchur(rootWeights: rootWeights, thetaL: thetaL)
        var hessian = [Double](repeating: 0, count: q * q)
        for j in 0..<q { for i in 0..<q { hessian[i + j * q] = 2 * schur.schur[i, j] } }
        for j in 0..<q { for i in 0..<j { let v = 0.5 * (hessian[i + j * q] + hessian[j + i * q]); hessian[i + j * q] = v; hessian[j + i * q] = v } }
        var piece = CrossedPiece(value: m.penalizedDeviance, gradient: gradient, hessian: hessian, logDet: m.factor.logDet)
        piece.largestRowShare = share
        return piece
    }

    /// The Schur complement of [√W Z_G 0] after the local effects, and its
    /// blocks, with the local θ.
    func weightedSchur(rootWeights: [Double], thetaL: [Double]) throws -> (schur: Matrix, blocks: SiteBlocks) {
        let s = local.structure, nf = s.factorCount, q = crossed.width
        let dims = (0..<nf).map { s.factorDimension($0) }
        // Column by column (SiteBlocksBuilder.addColumns): [√w z_G, 0] and √w z_L.
        let n = local.rows
        var w = [[Double]](repeating: [Double](repeating: 0, count: n), count: q + 1)
        for f in crossed.factors {
            for i in 0..<n { for a in 0..<f.dimension { w[f.column[i] + a][i] = rootWeights[i] * f.z[i * f.dimension + a] } }
        }
        let z: [[[Double]]] = (0..<nf).map { f in
            (0..<dims[f]).map { a in (0..<n).map { i in local.z[f][i * dims[f] + a] * rootWeights[i] } }
        }
        var builder = SiteBlocksBuilder(structure: s, width: q + 1, levelCounts: local.levelCounts, siteFactor: local.siteFactor)
        builder.addColumns(w: w, levels: local.levels, z: z)
        let blocks = builder.finish()
        let c = try LMMSite.evaluate(blocks, structure: s, theta: thetaL, order: 0)
        return (c.schur.valueMatrix, blocks)
    }

    /// The site-level effects at the optimum, given b_G at this site's
    /// levels and P = Cov(b_G) there: the site's mode given b_G, and the
    /// block of Λ H⁻¹ Λᵀ over all effects (lme4's condVar), which adds
    /// H_ss⁻¹ H_sG S⁻¹ H_Gs H_ss⁻¹ to H_ss⁻¹.
    public func siteEffects(theta: [Double], beta: [Double], effects: [Double], crossedCovariance: Matrix) throws -> SiteLevelEffects? {
        guard let sf = local.siteFactor else { return nil }
        let thetaL = localTheta.map { theta[$0] }
        let site = shifted(effects)
        let m = try site.modes(theta: thetaL, beta: beta, start: warm.withLock { $0 })
        let t = local.structure.factorMatrix(sf, theta: thetaL)
        let o = site.uOffset(sf)
        let own = Dense.multiply(t, Array(m.u[o..<(o + t.rows)]))
        let rootWeights = m.weights.map { $0.squareRoot() }
        let (_, blocks) = try weightedSchur(rootWeights: rootWeights, thetaL: thetaL)
        guard let cov = try LMMSite.siteEffects(blocks, structure: local.structure, theta: thetaL,
                                                beta: [Double](repeating: 0, count: crossed.width), sigma: 1,
                                                crossedCovariance: crossedCovariance) else { return nil }
        return SiteLevelEffects(effects: own, conditionalCovariance: cov.conditionalCovariance)
    }
}
