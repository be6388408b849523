// Plain dense linear algebra on small matrices (p×p, r×r, θ×θ).

public enum Dense {
    public static func transpose(_ a: Matrix) -> Matrix {
        var t = Matrix(rows: a.cols, cols: a.rows)
        for j in 0..<a.cols { for i in 0..<a.rows { t[j, i] = a[i, j] } }
        return t
    }

    public static func multiply(_ a: Matrix, _ b: Matrix) -> Matrix {
        precondition(a.cols == b.rows, "multiply: shapes do not match")
        var c = Matrix(rows: a.rows, cols: b.cols)
        for j in 0..<b.cols { for k in 0..<a.cols {
            let bkj = b[k, j]; if bkj == 0 { continue }
            for i in 0..<a.rows { c[i, j] += a[i, k] * bkj }
        } }
        return c
    }

    public static func multiply(_ a: Matrix, _ x: [Double]) -> [Double] {
        var y = [Double](repeating: 0, count: a.rows)
        for j in 0..<a.cols { for i in 0..<a.rows { y[i] += a[i, j] * x[j] } }
        return y
    }

    /// Lower Cholesky factor of a symmetric positive definite matrix.
    public static func cholesky(_ a: Matrix) throws -> Matrix {
        let n = a.rows
        var l = Matrix(rows: n, cols: n)
        for j in 0..<n {
            var d = a[j, j]
            for k in 0..<j { d -= l[j, k] * l[j, k] }
            guard d > 0, d.isFinite else { throw LinearAlgebraError.notPositiveDefinite(pivot: j) }
            let s = d.squareRoot()
            l[j, j] = s
            for i in (j + 1)..<max(n, j + 1) {
                var v = a[i, j]
                for k in 0..<j { v -= l[i, k] * l[j, k] }
                l[i, j] = v / s
            }
        }
        return l
    }

    public static func solveLower(_ l: Matrix, _ b: [Double]) -> [Double] {
        var x = b
        for i in 0..<l.rows {
            var v = x[i]
            for k in 0..<i { v -= l[i, k] * x[k] }
            x[i] = v / l[i, i]
        }
        return x
    }

    public static func solveLowerTranspose(_ l: Matrix, _ b: [Double]) -> [Double] {
        var x = b
        for i in stride(from: l.rows - 1, through: 0, by: -1) {
            var v = x[i]
            for k in (i + 1)..<max(l.rows, i + 1) { v -= l[k, i] * x[k] }
            x[i] = v / l[i, i]
        }
        return x
    }

    /// (L Lᵀ)⁻¹ from the lower factor L.
    public static func inverseFromCholesky(_ l: Matrix) -> Matrix {
        let n = l.rows
        var inv = Matrix(rows: n, cols: n)
        for j in 0..<n {
            var e = [Double](repeating: 0, count: n); e[j] = 1
            let x = solveLowerTranspose(l, solveLower(l, e))
            for i in 0..<n { inv[i, j] = x[i] }
        }
        return inv
    }

    /// Solves A x = b for symmetric positive definite A.
    public static func solveSPD(_ a: Matrix, _ b: [Double]) throws -> [Double] {
        let l = try cholesky(a)
        return solveLowerTranspose(l, solveLower(l, b))
    }

    /// Eigenvalues (ascending) and eigenvectors (columns) of a symmetric
    /// matrix, by cyclic Jacobi rotations: exact enough and simple for the
    /// optimizer's θ×θ Hessians.
    public static func symmetricEigen(_ a: Matrix) -> (values: [Double], vectors: Matrix) {
        let n = a.rows
        var m = a
        var v = Matrix.identity(n)
        for _ in 0..<100 {
            var off = 0.0
            for j in 0..<n { for i in 0..<j { off += m[i, j] * m[i, j] } }
            if off < 1e-30 { break }
            for p in 0..<n { for q in (p + 1)..<max(n, p + 1) {
                let apq = m[p, q]
                if abs(apq) < 1e-300 { continue }
                let theta = (m[q, q] - m[p, p]) / (2 * apq)
                let t = (theta >= 0 ? 1.0 : -1.0) / (abs(theta) + (theta * theta + 1).squareRoot())
                let c = 1 / (t * t + 1).squareRoot(), s = t * c
                for k in 0..<n {
                    let mkp = m[k, p], mkq = m[k, q]
                    m[k, p] = c * mkp - s * mkq
                    m[k, q] = s * mkp + c * mkq
                }
                for k in 0..<n {
                    let mpk = m[p, k], mqk = m[q, k]
                    m[p, k] = c * mpk - s * mqk
                    m[q, k] = s * mpk + c * mqk
                }
                for k in 0..<n {
                    let vkp = v[k, p], vkq = v[k, q]
                    v[k, p] = c * vkp - s * vkq
                    v[k, q] = s * vkp + c * vkq
                }
            } }
        }
        let order = (0..<n).sorted { m[$0, $0] < m[$1, $1] }
        var vecs = Matrix(rows: n, cols: n)
        for (k, j) in order.enumerated() { for i in 0..<n { vecs[i, k] = v[i, j] } }
        return (order.map { m[$0, $0] }, vecs)
    }
}
