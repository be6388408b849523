// Blocked linear algebra on jet matrices: the operations a site's
// contribution is made of. Each is the textbook algorithm with every scalar
// operation replaced by its jet counterpart, so derivatives are exact.

public enum LinearAlgebraError: Error, Equatable, CustomStringConvertible {
    case notPositiveDefinite(pivot: Int)
    case singular(what: String)

    public var description: String {
        switch self {
        case .notPositiveDefinite(let k):
            return "matrix is not positive definite (pivot \(k + 1))"
        case .singular(let what):
            return "\(what) is singular"
        }
    }
}

/// Scalar jet arithmetic on raw storage, as `JetKernel` does it. The
/// blocked operations below are generic over it so that the common case of
/// one parameter to second order (a scalar random effect per level) runs
/// without loops over parameters, with exactly JetKernel's expressions.
protocol JetArithmetic {
    var order: Int { get }
    /// c += sign · a · b
    func mulAdd(_ c: UnsafeMutablePointer<Double>, _ a: UnsafePointer<Double>, _ b: UnsafePointer<Double>, _ sign: Double)
    /// c = √a (in place allowed).
    func sqrt(_ c: UnsafeMutablePointer<Double>, _ a: UnsafePointer<Double>)
    /// c = a / b (c may alias a, not b).
    func divide(_ c: UnsafeMutablePointer<Double>, _ a: UnsafePointer<Double>, _ b: UnsafePointer<Double>)
    /// c += sign · log(a)
    func logAdd(_ c: UnsafeMutablePointer<Double>, _ a: UnsafePointer<Double>, _ sign: Double)
}

extension JetKernel: JetArithmetic {}

/// JetKernel for one parameter to second order (width 3: value, first and
/// second derivative), written out. Every expression is JetKernel's with
/// n = 1 and the single pair (0, 0), in the same order of operations.
struct OneParameterJet: JetArithmetic {
    var order: Int { 2 }

    @inline(__always)
    func mulAdd(_ c: UnsafeMutablePointer<Double>, _ a: UnsafePointer<Double>, _ b: UnsafePointer<Double>, _ sign: Double) {
        let a0 = a[0], b0 = b[0]
        c[0] += sign * a0 * b0
        c[1] += sign * (a[1] * b0 + a0 * b[1])
        c[2] += sign * (a[2] * b0 + a[1] * b[1] + a[1] * b[1] + a0 * b[2])
    }

    @inline(__always)
    func sqrt(_ c: UnsafeMutablePointer<Double>, _ a: UnsafePointer<Double>) {
        let s0 = a[0].squareRoot()
        let h = 0.5 / s0
        let si = a[1] * h, sj = a[1] * h
        c[2] = (a[2] - 2 * si * sj) * h
        c[1] = a[1] * h
        c[0] = s0
    }

    @inline(__always)
    func divide(_ c: UnsafeMutablePointer<Double>, _ a: UnsafePointer<Double>, _ b: UnsafePointer<Double>) {
        let b0 = b[0]
        let c0 = a[0] / b0
        c[1] = (a[1] - c0 * b[1]) / b0
        c[2] = (a[2] - c[1] * b[1] - c[1] * b[1] - c0 * b[2]) / b0
        c[0] = c0
    }

    @inline(__always)
    func logAdd(_ c: UnsafeMutablePointer<Double>, _ a: UnsafePointer<Double>, _ sign: Double) {
        let a0 = a[0]
        c[0] += sign * _log(a0)
        c[1] += sign * a[1] / a0
        c[2] += sign * (a[2] / a0 - a[1] * a[1] / (a0 * a0))
    }
}

/// JetKernel for three parameters to second order (width 10), written out:
/// the local θ of a 2×2 term such as `(1 + year | child)`, the most common
/// vector term, whose levels are most of a within-site site's work, and
/// `(1 | site/ward) + (1 | surgeon)`'s level-by-level elimination. Every
/// expression is JetKernel's with n = 3 and the pairs in JetSpace's order
/// (0,0), (0,1), (1,1), (0,2), (1,2), (2,2), in the same order of operations
/// and of reads and writes (so the same aliasing rules hold): the same
/// numbers to the bit, without the pair tables' loads and bounds checks.
struct ThreeParameterJet: JetArithmetic {
    var order: Int { 2 }

    @inline(__always)
    func mulAdd(_ c: UnsafeMutablePointer<Double>, _ a: UnsafePointer<Double>, _ b: UnsafePointer<Double>, _ sign: Double) {
        let a0 = a[0], b0 = b[0]
        c[0] += sign * a0 * b0
        c[1] += sign * (a[1] * b0 + a0 * b[1])
        c[2] += sign * (a[2] * b0 + a0 * b[2])
        c[3] += sign * (a[3] * b0 + a0 * b[3])
        c[4] += sign * (a[4] * b0 + a[1] * b[1] + a[1] * b[1] + a0 * b[4])
        c[5] += sign * (a[5] * b0 + a[1] * b[2] + a[2] * b[1] + a0 * b[5])
        c[6] += sign * (a[6] * b0 + a[2] * b[2] + a[2] * b[2] + a0 * b[6])
        c[7] += sign * (a[7] * b0 + a[1] * b[3] + a[3] * b[1] + a0 * b[7])
        c[8] += sign * (a[8] * b0 + a[2] * b[3] + a[3] * b[2] + a0 * b[8])
        c[9] += sign * (a[9] * b0 + a[3] * b[3] + a[3] * b[3] + a0 * b[9])
    }

    @inline(__always)
    func sqrt(_ c: UnsafeMutablePointer<Double>, _ a: UnsafePointer<Double>) {
        let s0 = a[0].squareRoot()
        let h = 0.5 / s0
        let s1 = a[1] * h, s2 = a[2] * h, s3 = a[3] * h
        c[4] = (a[4] - 2 * s1 * s1) * h
        c[5] = (a[5] - 2 * s1 * s2) * h
        c[6] = (a[6] - 2 * s2 * s2) * h
        c[7] = (a[7] - 2 * s1 * s3) * h
        c[8] = (a[8] - 2 * s2 * s3) * h
        c[9] = (a[9] - 2 * s3 * s3) * h
        c[1] = a[1] * h
        c[2] = a[2] * h
        c[3] = a[3] * h
        c[0] = s0
    }

    @inline(__always)
    func divide(_ c: UnsafeMutablePointer<Double>, _ a: UnsafePointer<Double>, _ b: UnsafePointer<Double>) {
        let b0 = b[0]
        let c0 = a[0] / b0
        c[1] = (a[1] - c0 * b[1]) / b0
        c[2] = (a[2] - c0 * b[2]) / b0
        c[3] = (a[3] - c0 * b[3]) / b0
        c[4] = (a[4] - c[1] * b[1] - c[1] * b[1] - c0 * b[4]) / b0
        c[5] = (a[5] - c[1] * b[2] - c[2] * b[1] - c0 * b[5]) / b0
        c[6] = (a[6] - c[2] * b[2] - c[2] * b[2] - c0 * b[6]) / b0
        c[7] = (a[7] - c[1] * b[3] - c[3] * b[1] - c0 * b[7]) / b0
        c[8] = (a[8] - c[2] * b[3] - c[3] * b[2] - c0 * b[8]) / b0
        c[9] = (a[9] - c[3] * b[3] - c[3] * b[3] - c0 * b[9]) / b0
        c[0] = c0
    }

    @inline(__always)
    func logAdd(_ c: UnsafeMutablePointer<Double>, _ a: UnsafePointer<Double>, _ sign: Double) {
        let a0 = a[0]
        c[0] += sign * _log(a0)
        c[1] += sign * a[1] / a0
        c[2] += sign * a[2] / a0
        c[3] += sign * a[3] / a0
        c[4] += sign * (a[4] / a0 - a[1] * a[1] / (a0 * a0))
        c[5] += sign * (a[5] / a0 - a[1] * a[2] / (a0 * a0))
        c[6] += sign * (a[6] / a0 - a[2] * a[2] / (a0 * a0))
        c[7] += sign * (a[7] / a0 - a[1] * a[3] / (a0 * a0))
        c[8] += sign * (a[8] / a0 - a[2] * a[3] / (a0 * a0))
        c[9] += sign * (a[9] / a0 - a[3] * a[3] / (a0 * a0))
    }
}

/// JetKernel at order 0 (plain values), written out: a values-only
/// factorization is the order-0 case of the jet one, with JetKernel's (and
/// Dense's) expressions in the same order.
struct ValueOnly: JetArithmetic {
    var order: Int { 0 }

    @inline(__always)
    func mulAdd(_ c: UnsafeMutablePointer<Double>, _ a: UnsafePointer<Double>, _ b: UnsafePointer<Double>, _ sign: Double) {
        c[0] += sign * a[0] * b[0]
    }

    @inline(__always)
    func sqrt(_ c: UnsafeMutablePointer<Double>, _ a: UnsafePointer<Double>) { c[0] = a[0].squareRoot() }

    @inline(__always)
    func divide(_ c: UnsafeMutablePointer<Double>, _ a: UnsafePointer<Double>, _ b: UnsafePointer<Double>) { c[0] = a[0] / b[0] }

    @inline(__always)
    func logAdd(_ c: UnsafeMutablePointer<Double>, _ a: UnsafePointer<Double>, _ sign: Double) { c[0] += sign * _log(a[0]) }
}

/// The blocked operations on raw jet storage (entry-major, column-major
/// entries; `w` numbers per entry). `JetMatrix`'s methods and the per-level
/// loop of a site's contribution both run these, so they compute the same
/// numbers in the same order; callers own the memory (no allocation here).
@usableFromInline
enum JetBlas {
    /// In-place lower Cholesky factor of the n×n matrix at `s` (upper triangle
    /// set to zero). `t` is scratch space for one entry.
    @inline(__always)
    static func cholesky<K: JetArithmetic>(_ s: UnsafeMutablePointer<Double>, n: Int, w: Int, kernel: K,
                         scratch t: UnsafeMutablePointer<Double>) throws {
        for j in 0..<n {
            let djj = s + (j + j * n) * w
            for k in 0..<j {
                let ljk = s + (j + k * n) * w
                kernel.mulAdd(djj, ljk, ljk, -1)
            }
            guard djj[0] > 0, djj[0].isFinite else { throw LinearAlgebraError.notPositiveDefinite(pivot: j) }
            kernel.sqrt(djj, djj)
            for i in (j + 1)..<max(n, j + 1) {
                let dij = s + (i + j * n) * w
                for k in 0..<j {
                    kernel.mulAdd(dij, s + (i + k * n) * w, s + (j + k * n) * w, -1)
                }
                for c in 0..<w { t[c] = dij[c] }
                kernel.divide(dij, t, djj)
            }
            for i in 0..<j { // zero the upper triangle (column j, rows above)
                let dij = s + (i + j * n) * w
                for c in 0..<w { dij[c] = 0 }
            }
        }
    }

    /// b ← L⁻¹ b for the n×cols matrix at `b`, L n×n lower triangular.
    @inline(__always)
    static func solveLower<K: JetArithmetic>(_ b: UnsafeMutablePointer<Double>, n: Int, cols: Int, _ lb: UnsafePointer<Double>,
                           w: Int, kernel: K, scratch t: UnsafeMutablePointer<Double>) {
        for col in 0..<cols {
            let cb = b + col * n * w
            for i in 0..<n {
                let bi = cb + i * w
                for k in 0..<i { kernel.mulAdd(bi, lb + (i + k * n) * w, cb + k * w, -1) }
                for c in 0..<w { t[c] = bi[c] }
                kernel.divide(bi, t, lb + (i + i * n) * w)
            }
        }
    }

    /// C (m×n) += sign · op(A) · op(B); A has `ar` rows, B `br` rows.
    @inline(__always)
    static func addProduct<K: JetArithmetic>(_ C: UnsafeMutablePointer<Double>, m: Int, n: Int, inner: Int,
                           _ A: UnsafePointer<Double>, ar: Int, transposeA: Bool,
                           _ B: UnsafePointer<Double>, br: Int, transposeB: Bool,
                           sign: Double, w: Int, kernel: K) {
        let order = kernel.order
        for j in 0..<n {
            for k in 0..<inner {
                let bkj = B + (transposeB ? (j + k * br) : (k + j * br)) * w
                if bkj[0] == 0 && order == 0 { continue }
                for i in 0..<m {
                    let aik = A + (transposeA ? (k + i * ar) : (i + k * ar)) * w
                    kernel.mulAdd(C + (i + j * m) * w, aik, bkj, sign)
                }
            }
        }
    }

    /// C (m×ccols) += sign · op(A) · c, c a constant inner×ccols matrix (column-major).
    @inline(__always)
    static func addProduct(_ C: UnsafeMutablePointer<Double>, m: Int, inner: Int,
                           _ A: UnsafePointer<Double>, ar: Int, transposeA: Bool,
                           constant c: UnsafePointer<Double>, ccols: Int, sign: Double, w: Int) {
        for j in 0..<ccols {
            for k in 0..<inner {
                let f = sign * c[k + j * inner]
                if f == 0 { continue }
                for i in 0..<m {
                    let aik = A + (transposeA ? (k + i * ar) : (i + k * ar)) * w
                    let cij = C + (i + j * m) * w
                    for q in 0..<w { cij[q] += f * aik[q] }
                }
            }
        }
    }

    /// C (m×bcols) += sign · op(c) · B, c a constant matrix with `crows` rows, B inner×bcols.
    @inline(__always)
    static func addProduct(_ C: UnsafeMutablePointer<Double>, m: Int, inner: Int,
                           constant c: UnsafePointer<Double>, crows: Int, transposeC: Bool,
                           _ B: UnsafePointer<Double>, bcols: Int, sign: Double, w: Int) {
        for j in 0..<bcols {
            for k in 0..<inner {
                let bkj = B + (k + j * inner) * w
                for i in 0..<m {
                    let f = sign * (transposeC ? c[k + i * crows] : c[i + k * crows])
                    if f == 0 { continue }
                    let cij = C + (i + j * m) * w
                    for q in 0..<w { cij[q] += f * bkj[q] }
                }
            }
        }
    }
}

extension JetMatrix {
    /// In-place lower Cholesky factor (upper triangle set to zero).
    public mutating func choleskyInPlace() throws {
        precondition(rows == cols, "Cholesky needs a square matrix")
        let n = rows, w = space.width
        let kernel = JetKernel(space)
        try withUnsafeTemporaryAllocation(of: Double.self, capacity: w) { tp in
            try storage.withUnsafeMutableBufferPointer { sp in
                try JetBlas.cholesky(sp.baseAddress!, n: n, w: w, kernel: kernel, scratch: tp.baseAddress!)
            }
        }
    }

    /// self ← L⁻¹ self, L lower triangular (forward substitution).
    public mutating func solveLowerInPlace(_ l: JetMatrix) {
        precondition(l.rows == rows && l.cols == rows, "solve: shapes do not match")
        let n = rows, w = space.width, cols = self.cols
        let kernel = JetKernel(space)
        withUnsafeTemporaryAllocation(of: Double.self, capacity: w) { tp in
            l.storage.withUnsafeBufferPointer { lp in
                storage.withUnsafeMutableBufferPointer { bp in
                    JetBlas.solveLower(bp.baseAddress!, n: n, cols: cols, lp.baseAddress!, w: w, kernel: kernel,
                                       scratch: tp.baseAddress!)
                }
            }
        }
    }

    /// self ← L⁻ᵀ self, L lower triangular (back substitution).
    public mutating func solveLowerTransposeInPlace(_ l: JetMatrix) {
        let n = rows, w = space.width
        let kernel = JetKernel(space)
        var tmp = [Double](repeating: 0, count: w)
        l.storage.withUnsafeBufferPointer { lp in
            let lb = lp.baseAddress!
            storage.withUnsafeMutableBufferPointer { bp in
                let b = bp.baseAddress!
                tmp.withUnsafeMutableBufferPointer { tp in
                    let t = tp.baseAddress!
                    for col in 0..<cols {
                        let cb = b + col * n * w
                        for i in stride(from: n - 1, through: 0, by: -1) {
                            let bi = cb + i * w
                            for k in (i + 1)..<max(n, i + 1) { kernel.mulAdd(bi, lb + (k + i * n) * w, cb + k * w, -1) }
                            for c in 0..<w { t[c] = bi[c] }
                            kernel.divide(bi, t, lb + (i + i * n) * w)
                        }
                    }
                }
            }
        }
    }

    /// self += sign · op(a) · op(b), op = transpose when asked.
    public mutating func addProduct(_ a: JetMatrix, transposeA: Bool = false,
                                    _ b: JetMatrix, transposeB: Bool = false, sign: Double = 1) {
        let m = transposeA ? a.cols : a.rows
        let inner = transposeA ? a.rows : a.cols
        let n = transposeB ? b.rows : b.cols
        precondition((transposeB ? b.cols : b.rows) == inner && rows == m && cols == n, "product: shapes do not match")
        let w = space.width
        let kernel = JetKernel(space)
        let ar = a.rows, br = b.rows
        a.storage.withUnsafeBufferPointer { ap in
            b.storage.withUnsafeBufferPointer { bp in
                storage.withUnsafeMutableBufferPointer { cp in
                    JetBlas.addProduct(cp.baseAddress!, m: m, n: n, inner: inner, ap.baseAddress!, ar: ar, transposeA: transposeA,
                                       bp.baseAddress!, br: br, transposeB: transposeB, sign: sign, w: w, kernel: kernel)
                }
            }
        }
    }

    /// self += sign · op(a) · c where c is a constant matrix.
    public mutating func addProduct(_ a: JetMatrix, transposeA: Bool = false, constant c: Matrix, sign: Double = 1) {
        let m = transposeA ? a.cols : a.rows
        let inner = transposeA ? a.rows : a.cols
        precondition(c.rows == inner && rows == m && cols == c.cols, "product: shapes do not match")
        let w = space.width, ar = a.rows
        a.storage.withUnsafeBufferPointer { ap in
            c.data.withUnsafeBufferPointer { dp in
                storage.withUnsafeMutableBufferPointer { cp in
                    JetBlas.addProduct(cp.baseAddress!, m: m, inner: inner, ap.baseAddress!, ar: ar, transposeA: transposeA,
                                       constant: dp.baseAddress!, ccols: c.cols, sign: sign, w: w)
                }
            }
        }
    }

    /// self += sign · c · op(b) where c is a constant matrix.
    public mutating func addProduct(constant c: Matrix, transposeC: Bool = false, _ b: JetMatrix, sign: Double = 1) {
        let m = transposeC ? c.cols : c.rows
        let inner = transposeC ? c.rows : c.cols
        precondition(b.rows == inner && rows == m && cols == b.cols, "product: shapes do not match")
        let w = space.width
        b.storage.withUnsafeBufferPointer { bp in
            c.data.withUnsafeBufferPointer { dp in
                storage.withUnsafeMutableBufferPointer { cp in
                    JetBlas.addProduct(cp.baseAddress!, m: m, inner: inner, constant: dp.baseAddress!, crows: c.rows,
                                       transposeC: transposeC, bp.baseAddress!, bcols: b.cols, sign: sign, w: w)
                }
            }
        }
    }

    /// Adds `x` to the value of every diagonal entry.
    public mutating func addToDiagonal(_ x: Double) {
        for i in 0..<min(rows, cols) { storage[offset(i, i)] += x }
    }

    /// Σ log of the diagonal entries, times `scale` (2 for log|L|² of a Cholesky factor).
    public func sumLogDiagonal(scale: Double) -> ScalarJet {
        var out = ScalarJet(space: space)
        let kernel = JetKernel(space)
        storage.withUnsafeBufferPointer { sp in
            out.storage.withUnsafeMutableBufferPointer { op in
                for i in 0..<min(rows, cols) { kernel.logAdd(op.baseAddress!, sp.baseAddress! + offset(i, i), scale) }
            }
        }
        return out
    }

    /// Re-expresses a jet in fewer parameters as a jet in more: local
    /// parameter k is global parameter `map[k]` (map sorted ascending).
    public func lifted(to global: JetSpace, map: [Int]) -> JetMatrix {
        var out = JetMatrix(rows: rows, cols: cols, space: global)
        out.addLifted(self, map: map)
        return out
    }

    /// self += lifted(local)
    public mutating func addLifted(_ local: JetMatrix, map: [Int], sign: Double = 1,
                                   rowOffset: Int = 0, colOffset: Int = 0) {
        let ls = local.space, gs = space
        let lw = ls.width, gw = gs.width
        let order = min(ls.order, gs.order)
        for j in 0..<local.cols {
            for i in 0..<local.rows {
                let lo = (i + j * local.rows) * lw
                let go = ((i + rowOffset) + (j + colOffset) * rows) * gw
                storage[go] += sign * local.storage[lo]
                if order >= 1 {
                    for k in 0..<ls.parameters { storage[go + 1 + map[k]] += sign * local.storage[lo + 1 + k] }
                }
                if order >= 2 {
                    for k in 0..<ls.pairFirst.count {
                        let a = ls.pairFirst[k], b = ls.pairSecond[k]
                        storage[go + gs.secondIndex(map[a], map[b])] += sign * local.storage[lo + 1 + ls.parameters + k]
                    }
                }
            }
        }
    }
}

extension ScalarJet {
    /// self += sign · lifted(local)
    public mutating func addLifted(_ local: ScalarJet, map: [Int], sign: Double = 1) {
        let ls = local.space
        storage[0] += sign * local.storage[0]
        let order = min(ls.order, space.order)
        if order >= 1 { for k in 0..<ls.parameters { storage[1 + map[k]] += sign * local.storage[1 + k] } }
        if order >= 2 {
            for k in 0..<ls.pairFirst.count {
                storage[space.secondIndex(map[ls.pairFirst[k]], map[ls.pairSecond[k]])] += sign * local.storage[1 + ls.parameters + k]
            }
        }
    }
}
