// Generalized estimating equations at one site, as geepack computes them
// (geese.fit's Fisher scoring, src/gee2.cc): every sum the coordinator needs
// for one step, summed over the site's clusters so that nothing per cluster
// leaves the site. In geepack's scaling, D = diag(μ'(η)/√v(μ)) X and the
// Pearson residual r = (y − μ)/√v(μ); the working covariance of a cluster is
// φ R(α). Per cluster i:
//   information  Σ Dᵢᵀ(φRᵢ)⁻¹Dᵢ                (the bread's inverse)
//   score        Σ Uᵢ,  Uᵢ = Dᵢᵀ(φRᵢ)⁻¹rᵢ      (the estimating function)
//   meat         Σ UᵢUᵢᵀ                        (the sandwich's meat)
//   Σ r²                                        (the scale's moment: φ = Σ r²/N)
//   Σ E², Σ E·rⱼrₖ, Σ E·ρⱼₖ over pairs j < k      (α's Fisher step, E = ∂ρⱼₖ/∂α)
// and, given the bread B, the meats of the small-sample corrections of
// Mancl & DeRouen (2001) and Kauermann & Carroll (2001).

import Foundation

/// The working correlation of a cluster (geepack's corstr).
public enum WorkingCorrelation: String, Sendable, Hashable, CaseIterable {
    case independence, exchangeable, ar1

    /// ρⱼₖ and ∂ρⱼₖ/∂α for a pair at distance d (ar1: the difference of the
    /// order values), as geepack's cor_exch / cor_ar1 and their cor_rho give them.
    @inline(__always) func pair(alpha: Double, distance d: Double) -> (rho: Double, derivative: Double) {
        switch self {
        case .independence: return (0, 0)
        case .exchangeable: return (alpha, 1)
        case .ar1: return (Foundation.pow(alpha, d), d == 1 ? 1 : d * Foundation.pow(alpha, d - 1))
        }
    }
}

/// The sums one GEE round asks of a site.
public struct GEESums: Sendable, Equatable {
    public var rows = 0
    public var clusters = 0
    /// Σ DᵀV⁻¹D, p×p column-major.
    public var information: [Double]
    /// Σ DᵀV⁻¹r.
    public var score: [Double]
    /// Σ UᵢUᵢᵀ, p×p column-major.
    public var meat: [Double]
    /// Σ r² over rows.
    public var pearsonSquares = 0.0
    /// Over within-cluster pairs: Σ E², Σ E·rⱼrₖ, Σ E·ρⱼₖ (E = ∂ρ/∂α at the α sent).
    public var alphaInformation = 0.0
    public var alphaCross = 0.0
    public var alphaFitted = 0.0
    /// False when μ leaves the family's range at β (geepack then halves the step).
    public var validMean = true
    /// With a bread: Σ over clusters of the corrected estimating functions'
    /// outer products, Mancl-DeRouen and Kauermann-Carroll (p×p column-major).
    public var meatMD: [Double]? = nil
    public var meatKC: [Double]? = nil

    init(p: Int) {
        information = [Double](repeating: 0, count: p * p)
        score = [Double](repeating: 0, count: p)
        meat = [Double](repeating: 0, count: p * p)
    }

    public init(rows: Int, clusters: Int, information: [Double], score: [Double], meat: [Double]) {
        self.rows = rows; self.clusters = clusters; self.information = information; self.score = score; self.meat = meat
    }
}

public enum GEEError: Error, Equatable, CustomStringConvertible {
    case repeatedOrder
    case clusterTooLarge(rows: Int, limit: Int)
    case workingCorrelationNotPositiveDefinite
    case leverageAtOne

    public var description: String {
        switch self {
        case .repeatedOrder:
            return "two rows of one cluster have the same order value; ar1 needs distinct order values within each cluster"
        case .clusterTooLarge(let n, let limit):
            return "a cluster has \(n) rows; ar1 handles clusters of at most \(limit) rows. Cluster by a finer variable, or use the exchangeable working correlation"
        case .workingCorrelationNotPositiveDefinite:
            return "the working correlation is not positive definite at the current α"
        case .leverageAtOne:
            return "a cluster's leverage I − H is not positive definite, so the small-sample corrections are undefined"
        }
    }
}

/// One site's rows for GEE: the flat model's rows, their clusters and, for
/// ar1, each row's order value within its cluster.
public struct GEESite: Sendable {
    public let rows: FlatSite
    public let family: GLMFamily
    public let structure: WorkingCorrelation
    /// ar1: each row's order value (geeglm's waves); nil: the row order.
    public let order: [Double]?
    /// The rows of each cluster.
    public let members: [[Int]]
    /// The largest cluster ar1's dense factorization may take.
    public static let maxDenseCluster = 2_000

    public init(rows: FlatSite, family: GLMFamily, structure: WorkingCorrelation, order: [Double]?) throws {
        self.rows = rows; self.family = family; self.structure = structure; self.order = order
        var m = [[Int]](repeating: [], count: rows.clusterCount)
        for i in 0..<rows.rows { m[rows.clusters[i]].append(i) }
        members = m.filter { !$0.isEmpty }
        if structure == .ar1 {
            for c in members {
                guard c.count <= Self.maxDenseCluster else { throw GEEError.clusterTooLarge(rows: c.count, limit: Self.maxDenseCluster) }
                let w = c.map { wave($0) }
                if Set(w).count < w.count { throw GEEError.repeatedOrder }
            }
        }
    }

    @inline(__always) func wave(_ i: Int) -> Double { order?[i] ?? Double(i) }

    /// Whether μ is inside the family's range (geepack's validMu).
    @inline(__always) func valid(_ mu: Double) -> Bool {
        switch family.distribution {
        case .gaussian: return mu.isFinite
        case .binomial: return mu > 0 && mu < 1
        case .poisson: return mu > 0 && mu.isFinite
        }
    }

    /// The sums at (β, α, φ); with `bread` (B = (Σ DᵀV⁻¹D)⁻¹ over all sites),
    /// also the corrected meats.
    public func sums(beta: [Double], alpha: Double, scale phi: Double, bread: Matrix? = nil) throws -> GEESums {
        let p = rows.p
        var out = GEESums(p: p)
        out.rows = rows.rows
        out.clusters = members.count
        if bread != nil { out.meatMD = [Double](repeating: 0, count: p * p); out.meatKC = out.meatMD }
        let roots = try bread.map(Self.roots)
        for c in members {
            let n = c.count
            var d = [Double](repeating: 0, count: n * p)   // n×p column-major
            var r = [Double](repeating: 0, count: n)
            for (a, i) in c.enumerated() {
                let eta = rows.eta(beta, row: i), mu = family.mu(eta)
                if !valid(mu) { out.validMean = false }
                let sv = family.variance(mu).squareRoot(), f = family.muEta(eta) / sv
                r[a] = (rows.mean(row: i, family: family) - mu) / sv
                for j in 0..<p { d[a + j * n] = f * rows.x[i * p + j] }
                out.pearsonSquares += r[a] * r[a]
            }
            // W = (φR)⁻¹ [D r]
            let w = try applyInverse(members: c, alpha: alpha, scale: phi, columns: d + r, width: p + 1)
            var u = [Double](repeating: 0, count: p)
            var information = Matrix(rows: p, cols: p)
            for j in 0..<p {
                for a in 0..<n { u[j] += d[a + j * n] * w[a + p * n] }
                for k in 0...j {
                    var s = 0.0
                    for a in 0..<n { s += d[a + j * n] * w[a + k * n] }
                    information[j, k] = s; information[k, j] = s
                    out.information[j + k * p] += s
                }
            }
            for j in 0..<p { out.score[j] += u[j]; for k in 0..<p { out.meat[j + k * p] += u[j] * u[k] } }
            if structure != .independence && n > 1 {
                for a in 0..<(n - 1) { for b in (a + 1)..<n {
                    let e = structure.pair(alpha: alpha, distance: abs(wave(c[b]) - wave(c[a])))
                    out.alphaInformation += e.derivative * e.derivative
                    out.alphaCross += e.derivative * r[a] * r[b]
                    out.alphaFitted += e.derivative * e.rho
                } }
            }
            if let roots {
                let (md, kc) = try Self.correctedScores(information: information, score: u, roots: roots)
                for j in 0..<p { for k in 0..<p {
                    out.meatMD![j + k * p] += md[j] * md[k]
                    out.meatKC![j + k * p] += kc[j] * kc[k]
                } }
            }
        }
        for j in 0..<p { for k in 0..<j { out.information[k + j * p] = out.information[j + k * p] } }
        return out
    }

    /// The working correlation R(α) of one cluster, dense.
    func correlation(members c: [Int], alpha: Double) -> Matrix {
        var m = Matrix.identity(c.count)
        guard structure != .independence else { return m }
        for a in 0..<c.count { for b in 0..<c.count where a != b {
            m[a, b] = structure.pair(alpha: alpha, distance: abs(wave(c[b]) - wave(c[a]))).rho
        } }
        return m
    }

    /// (φR)⁻¹ times the n-row columns (column-major, `width` of them): a
    /// diagonal for independence, the closed form of the exchangeable
    /// inverse, R⁻¹ = (I − c·11ᵀ)/(1 − α) with c = α/(1 + (n − 1)α), and a
    /// dense Cholesky solve for ar1.
    func applyInverse(members c: [Int], alpha: Double, scale phi: Double, columns: [Double], width: Int) throws -> [Double] {
        let n = c.count
        var out = columns
        switch structure {
        case .independence:
            for k in out.indices { out[k] /= phi }
        case _ where n == 1:
            for k in out.indices { out[k] /= phi }
        case .exchangeable:
            let denominator = 1 + Double(n - 1) * alpha
            guard alpha < 1, denominator > 0 else { throw GEEError.workingCorrelationNotPositiveDefinite }
            let cc = alpha / denominator
            for j in 0..<width {
                var s = 0.0
                for a in 0..<n { s += columns[a + j * n] }
                for a in 0..<n { out[a + j * n] = (columns[a + j * n] - cc * s) / ((1 - alpha) * phi) }
            }
        case .ar1:
            var v = correlation(members: c, alpha: alpha)
            for k in v.data.indices { v.data[k] *= phi }
            guard let l = try? Dense.cholesky(v) else { throw GEEError.workingCorrelationNotPositiveDefinite }
            for j in 0..<width {
                let x = Dense.solveLowerTranspose(l, Dense.solveLower(l, Array(columns[(j * n)..<((j + 1) * n)])))
                for a in 0..<n { out[a + j * n] = x[a] }
            }
        }
        return out
    }

    /// The square roots B^½ and B^(-½) of the bread (symmetric, by its eigenvectors).
    static func roots(_ bread: Matrix) throws -> (half: Matrix, inverseHalf: Matrix) {
        let (values, vectors) = Dense.symmetricEigen(bread)
        guard values.allSatisfy({ $0 > 0 }) else { throw GEEError.workingCorrelationNotPositiveDefinite }
        let p = bread.rows
        var half = Matrix(rows: p, cols: p), inverseHalf = Matrix(rows: p, cols: p)
        for j in 0..<p { for i in 0..<p { for k in 0..<p {
            let v = vectors[i, k] * vectors[j, k], r = values[k].squareRoot()
            half[i, j] += v * r
            inverseHalf[i, j] += v / r
        } } }
        return (half, inverseHalf)
    }

    /// One cluster's estimating function corrected for its leverage, from
    /// its information Aᵢ = DᵀV⁻¹D and function Uᵢ = DᵀV⁻¹r alone. With
    /// V = LLᵀ, G = L⁻¹D and H̃ = G B Gᵀ (similar to Hᵢᵢ = D B DᵀV⁻¹), the
    /// corrected function is Gᵀ h(H̃) L⁻¹r with h(x) = (1 − x)⁻¹ (Mancl-DeRouen)
    /// or (1 − x)^(-½) (Kauermann-Carroll, the principal root). Since
    /// Gᵀh(GBGᵀ) = h(GᵀG B)Gᵀ and GᵀG B = Aᵢ B = B^(-½) S B^½ with
    /// S = B^½ Aᵢ B^½ = W Λ Wᵀ (p×p), it is B^(-½) W h(Λ) Wᵀ B^½ Uᵢ: no n×n matrix.
    static func correctedScores(information a: Matrix, score u: [Double], roots: (half: Matrix, inverseHalf: Matrix)) throws -> (md: [Double], kc: [Double]) {
        let s = Dense.multiply(Dense.multiply(roots.half, a), roots.half)
        let (values, vectors) = Dense.symmetricEigen(s)
        guard values.allSatisfy({ $0 < 1 }) else { throw GEEError.leverageAtOne }
        let p = a.rows
        let projected = Dense.multiply(Dense.transpose(vectors), Dense.multiply(roots.half, u))
        func apply(_ h: (Double) -> Double) -> [Double] {
            var w = [Double](repeating: 0, count: p)
            for k in 0..<p { let c = projected[k] * h(values[k]); for i in 0..<p { w[i] += vectors[i, k] * c } }
            return Dense.multiply(roots.inverseHalf, w)
        }
        return (apply { 1 / (1 - $0) }, apply { 1 / (1 - $0).squareRoot() })
    }
}
