// R's natural cubic spline basis, splines::ns(x, knots, Boundary.knots),
// written so that a site can evaluate it with the expression functions it
// already has (pmin, pmax, powers) and without learning anything new:
//
// ns's columns are B(x)·Q₃…ₘ, where B is the cubic B-spline basis on the
// knots (boundary knots four-fold; the first column dropped without an
// intercept) and Q comes from the Householder QR (LINPACK's dqrdc2, as R's
// qr() does) of the second derivatives of B at the two boundary knots, so
// each column is a natural cubic spline: cubic between knots, linear beyond
// the boundary knots. Any such function f with knots ξ₁ < … < ξ_K is
//
//     f(x) = f(ξ₁) + f′(ξ₁)(u − ξ₁) + Σ_{k<K} c_k (u − ξ_k)₊³ + f′(ξ_K)(x − u),
//     u = min(x, ξ_K),  c_k = the jump of f‴ at ξ_k, divided by 6,
//
// which is what `NaturalSpline.Column` holds. Clamping at ξ_K keeps the
// cubic terms from cancelling for rows far beyond the last knot.

/// The columns of R's `ns(x, knots =, Boundary.knots =, intercept =)`, each
/// as a natural cubic spline in truncated-power form.
public struct NaturalSpline: Sendable, Equatable {
    /// One column: value and slope at the first knot, slope at the last, and
    /// the truncated-power coefficients c_k at the knots ξ₁ … ξ_{K−1}.
    public struct Column: Sendable, Equatable {
        public var valueAtFirst: Double
        public var slopeAtFirst: Double
        public var slopeAtLast: Double
        public var cubic: [Double]
    }

    /// ξ₁ … ξ_K: the lower boundary knot, the interior knots, the upper one.
    public let knots: [Double]
    public let columns: [Column]

    public enum SplineError: Error, Equatable, CustomStringConvertible {
        case boundary(String)
        public var description: String { if case .boundary(let s) = self { return s }; return "" }
    }

    public init(interior: [Double], boundary: (Double, Double), intercept: Bool = false) throws {
        let (lo, hi) = (min(boundary.0, boundary.1), max(boundary.0, boundary.1))
        guard lo < hi, lo.isFinite, hi.isFinite else {
            throw SplineError.boundary("the boundary knots must be two different finite numbers")
        }
        let inner = interior.sorted()
        guard inner.allSatisfy({ $0 > lo && $0 < hi }) else {
            throw SplineError.boundary("every interior knot must lie strictly between the boundary knots")
        }
        guard Set(inner).count == inner.count else { throw SplineError.boundary("the interior knots must be distinct") }
        knots = [lo] + inner + [hi]
        let all = [Double](repeating: lo, count: 4) + inner + [Double](repeating: hi, count: 4)
        let bspline = BSpline(knots: all)
        let drop = intercept ? 0 : 1
        // Second derivatives at the boundary knots, transposed: m × 2.
        let m = bspline.count - drop
        var constraints = [[Double]](repeating: [0, 0], count: m)
        for (c, x) in [lo, hi].enumerated() {
            let d2 = bspline.derivatives(at: x, order: 2)
            for j in 0..<m { constraints[j][c] = d2[j + drop] }
        }
        let qr = HouseholderQR(constraints)
        func project(_ b: [Double]) -> [Double] { Array(qr.transposeQTimes(Array(b.dropFirst(drop))).dropFirst(2)) }

        // Each column's value and slopes, and f‴ on each knot interval.
        let v1 = project(bspline.derivatives(at: lo, order: 0))
        let s1 = project(bspline.derivatives(at: lo, order: 1))
        let sK = project(bspline.derivatives(at: hi, order: 1))
        var third: [[Double]] = []
        for k in 0..<(knots.count - 1) { third.append(project(bspline.derivatives(at: (knots[k] + knots[k + 1]) / 2, order: 3))) }
        var out: [Column] = []
        for j in 0..<(m - 2) {
            var cubic: [Double] = []
            for k in 0..<(knots.count - 1) {
                let before = k == 0 ? 0 : third[k - 1][j]
                cubic.append((third[k][j] - before) / 6)
            }
            out.append(Column(valueAtFirst: v1[j], slopeAtFirst: s1[j], slopeAtLast: sK[j], cubic: cubic))
        }
        columns = out
    }

    /// The columns at x, from the truncated-power form (what the sites compute).
    public func values(at x: Double) -> [Double] {
        let first = knots[0], last = knots[knots.count - 1]
        let u = min(x, last)
        return columns.map { c in
            var f = c.valueAtFirst + c.slopeAtFirst * (u - first) + c.slopeAtLast * (x - u)
            for (k, a) in c.cubic.enumerated() { let t = max(u - knots[k], 0); f += a * t * t * t }
            return f
        }
    }
}

/// B-splines of order 4 on a knot sequence (de Boor's recursion), with
/// derivatives; at the last knot the last interval is used, as
/// splineDesign does.
struct BSpline {
    let knots: [Double]
    let order = 4
    var count: Int { knots.count - order }

    /// Values (order 0) or derivatives of every basis function at x.
    func derivatives(at x: Double, order d: Int) -> [Double] {
        // The interval [t_i, t_{i+1}) holding x, with t_i < t_{i+1}.
        var i = order - 1
        while i + 1 < count && knots[i + 1] <= x { i += 1 }
        // Basis functions of increasing order on that interval, then the
        // derivative recursion from order 4 − d upward.
        var b = [Double](repeating: 0, count: order)
        b[0] = 1
        let lowOrder = order - d
        for k in 1..<order {
            var next = [Double](repeating: 0, count: order)
            for r in 0...k {
                let j = i - k + r            // basis function index
                var v = 0.0
                if r > 0 {                   // term from B_{j, k-1}
                    let den = knots[j + k] - knots[j]
                    if den > 0 {
                        v += (k < lowOrder ? (x - knots[j]) : Double(k)) / den * b[r - 1]
                    }
                }
                if r < k {                   // term from B_{j+1, k-1}
                    let den = knots[j + k + 1] - knots[j + 1]
                    if den > 0 {
                        v += (k < lowOrder ? (knots[j + k + 1] - x) : -Double(k)) / den * b[r]
                    }
                }
                next[r] = v
            }
            b = next
        }
        var out = [Double](repeating: 0, count: count)
        for r in 0..<order { out[i - (order - 1) + r] = b[r] }
        return out
    }
}

/// Householder QR of an m × n matrix (rows given), as LINPACK's dqrdc2
/// computes it without pivoting, so that Qᵀy has R's signs.
struct HouseholderQR {
    /// Column l's Householder vector in rows l…m−1 (scaled as dqrdc2 keeps it).
    var vectors: [[Double]] = []

    init(_ rowsIn: [[Double]]) {
        var a = rowsIn
        let m = a.count, n = a.first?.count ?? 0
        for l in 0..<min(n, m - 1) {
            var norm = 0.0
            for i in l..<m { norm += a[i][l] * a[i][l] }
            norm = norm.squareRoot()
            var v = [Double](repeating: 0, count: m)
            guard norm != 0 else { vectors.append(v); continue }
            if a[l][l] != 0 { norm = a[l][l] < 0 ? -abs(norm) : abs(norm) }
            for i in l..<m { a[i][l] /= norm }
            a[l][l] += 1
            for j in (l + 1)..<max(n, l + 1) {
                var t = 0.0
                for i in l..<m { t -= a[i][l] * a[i][j] }
                t /= a[l][l]
                for i in l..<m { a[i][j] += t * a[i][l] }
            }
            for i in l..<m { v[i] = a[i][l] }
            vectors.append(v)
        }
    }

    /// Qᵀy (R's qr.qty).
    func transposeQTimes(_ yIn: [Double]) -> [Double] {
        var y = yIn
        for (l, v) in vectors.enumerated() where v[l] != 0 {
            var t = 0.0
            for i in l..<y.count { t -= v[i] * y[i] }
            t /= v[l]
            for i in l..<y.count { y[i] += t * v[i] }
        }
        return y
    }
}
