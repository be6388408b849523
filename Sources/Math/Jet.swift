// Second-order forward-mode derivatives ("jets") of small matrices.
//
// A site's contribution to the profiled criterion is a chain of Cholesky
// factorizations, triangular solves and products of small blocks. Carrying
// every scalar together with its gradient and Hessian in θ through that chain
// gives exact derivatives of the contribution, so the coordinator can take
// Newton steps and a federated fit needs a handful of rounds instead of the
// hundreds a derivative-free optimizer would spend.

/// The shape of a jet: how many parameters it is differentiated in and to
/// which order (0: value only, 1: gradient, 2: gradient and Hessian).
public struct JetSpace: Sendable, Equatable {
    public let parameters: Int
    public let order: Int
    /// Numbers per scalar: value, first derivatives, upper-triangle second derivatives.
    public let width: Int
    /// For each stored second derivative k: its parameter pair (i ≤ j).
    public let pairFirst: [Int]
    public let pairSecond: [Int]

    public init(parameters: Int, order: Int) {
        precondition(order >= 0 && order <= 2, "jet order must be 0, 1 or 2")
        self.parameters = parameters
        self.order = order
        var pi: [Int] = [], pj: [Int] = []
        if order == 2 {
            for j in 0..<parameters { for i in 0...j { pi.append(i); pj.append(j) } }
        }
        pairFirst = pi; pairSecond = pj
        width = Self.width(parameters: parameters, order: order)
    }

    /// Numbers per scalar of a jet in `parameters` to `order`: the value,
    /// the gradient (order ≥ 1) and the upper triangle of the Hessian
    /// (order 2). The one place this count is made; it allocates nothing,
    /// so callers can size a message before building its space.
    @inline(__always)
    public static func width(parameters n: Int, order: Int) -> Int {
        1 + (order >= 1 ? n : 0) + (order >= 2 ? n * (n + 1) / 2 : 0)
    }

    /// Storage offset of ∂²/∂θi∂θj within a scalar.
    @inline(__always) public func secondIndex(_ i: Int, _ j: Int) -> Int {
        let (a, b) = i <= j ? (i, j) : (j, i)
        return 1 + parameters + b * (b + 1) / 2 + a
    }
}

/// Scalar jet arithmetic on raw storage (one scalar = `space.width` doubles).
/// Written on pointers because it runs once per group per evaluation.
@usableFromInline
struct JetKernel {
    let n: Int
    let order: Int
    let pairs: Int
    let pi: [Int]
    let pj: [Int]

    init(_ s: JetSpace) { n = s.parameters; order = s.order; pairs = s.pairFirst.count; pi = s.pairFirst; pj = s.pairSecond }

    /// c += sign · a · b
    @inline(__always)
    func mulAdd(_ c: UnsafeMutablePointer<Double>, _ a: UnsafePointer<Double>, _ b: UnsafePointer<Double>, _ sign: Double) {
        let a0 = a[0], b0 = b[0]
        c[0] += sign * a0 * b0
        if order == 0 { return }
        for i in 1...max(n, 1) where i <= n { c[i] += sign * (a[i] * b0 + a0 * b[i]) }
        if order == 1 { return }
        let base = 1 + n
        for k in 0..<pairs {
            let i = 1 + pi[k], j = 1 + pj[k]
            c[base + k] += sign * (a[base + k] * b0 + a[i] * b[j] + a[j] * b[i] + a0 * b[base + k])
        }
    }

    /// c += sign · a · b where b is a constant (no derivatives).
    @inline(__always)
    func mulConstAdd(_ c: UnsafeMutablePointer<Double>, _ a: UnsafePointer<Double>, _ b: Double, _ sign: Double, width: Int) {
        let f = sign * b
        for k in 0..<width { c[k] += f * a[k] }
    }

    /// c = √a (in place allowed).
    @inline(__always)
    func sqrt(_ c: UnsafeMutablePointer<Double>, _ a: UnsafePointer<Double>) {
        let s0 = a[0].squareRoot()
        let h = 0.5 / s0
        if order >= 2 {
            let base = 1 + n
            for k in 0..<pairs {
                let i = 1 + pi[k], j = 1 + pj[k]
                // s² = a ⇒ 2 s s_ij + 2 s_i s_j = a_ij
                let si = a[i] * h, sj = a[j] * h
                c[base + k] = (a[base + k] - 2 * si * sj) * h
            }
        }
        if order >= 1 { for i in stride(from: 1, through: n, by: 1) { c[i] = a[i] * h } }
        c[0] = s0
    }

    /// c = a / b (c may alias a, not b).
    @inline(__always)
    func divide(_ c: UnsafeMutablePointer<Double>, _ a: UnsafePointer<Double>, _ b: UnsafePointer<Double>) {
        let b0 = b[0]
        let c0 = a[0] / b0
        if order >= 1 {
            for i in stride(from: 1, through: n, by: 1) { c[i] = (a[i] - c0 * b[i]) / b0 }
        }
        if order >= 2 {
            let base = 1 + n
            for k in 0..<pairs {
                let i = 1 + pi[k], j = 1 + pj[k]
                // a = c b ⇒ a_ij = c_ij b + c_i b_j + c_j b_i + c b_ij
                c[base + k] = (a[base + k] - c[i] * b[j] - c[j] * b[i] - c0 * b[base + k]) / b0
            }
        }
        c[0] = c0
    }

    /// c += sign · log(a)
    @inline(__always)
    func logAdd(_ c: UnsafeMutablePointer<Double>, _ a: UnsafePointer<Double>, _ sign: Double) {
        let a0 = a[0]
        c[0] += sign * _log(a0)
        if order >= 1 { for i in stride(from: 1, through: n, by: 1) { c[i] += sign * a[i] / a0 } }
        if order >= 2 {
            let base = 1 + n
            for k in 0..<pairs {
                let i = 1 + pi[k], j = 1 + pj[k]
                c[base + k] += sign * (a[base + k] / a0 - a[i] * a[j] / (a0 * a0))
            }
        }
    }
}

@inline(__always) func _log(_ x: Double) -> Double {
    #if canImport(Glibc)
    return Glibc.log(x)
    #else
    return Darwin.log(x)
    #endif
}
#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// A scalar with its gradient and Hessian in θ.
public struct ScalarJet: Sendable, Equatable {
    public var space: JetSpace
    public var storage: [Double]

    public init(space: JetSpace, value: Double = 0) {
        self.space = space
        storage = Array(repeating: 0, count: space.width)
        storage[0] = value
    }
    public var value: Double { storage[0] }
    public var gradient: [Double] {
        guard space.order >= 1 else { return [] }
        return Array(storage[1...space.parameters])
    }
    /// The full symmetric Hessian, row-major n×n.
    public var hessian: [Double] {
        let n = space.parameters
        guard space.order >= 2 else { return [] }
        var h = Array(repeating: 0.0, count: n * n)
        for i in 0..<n { for j in 0..<n { h[i * n + j] = storage[space.secondIndex(i, j)] } }
        return h
    }
    public static func + (a: ScalarJet, b: ScalarJet) -> ScalarJet {
        var c = a
        for k in 0..<c.storage.count { c.storage[k] += b.storage[k] }
        return c
    }
    /// self += sign · log(a)
    public mutating func addLog(of a: ScalarJet, scale: Double = 1) {
        let kernel = JetKernel(space)
        storage.withUnsafeMutableBufferPointer { c in
            a.storage.withUnsafeBufferPointer { ap in kernel.logAdd(c.baseAddress!, ap.baseAddress!, scale) }
        }
    }
}

/// A matrix whose every entry is a jet. Storage is entry-major: the `width`
/// numbers of entry (i, j) are contiguous, entries in column-major order.
public struct JetMatrix: Sendable, Equatable {
    public let space: JetSpace
    public let rows: Int
    public let cols: Int
    public var storage: [Double]

    public init(rows: Int, cols: Int, space: JetSpace) {
        self.rows = rows; self.cols = cols; self.space = space
        storage = Array(repeating: 0, count: rows * cols * space.width)
    }

    /// A constant matrix (zero derivatives).
    public init(constant m: Matrix, space: JetSpace) {
        self.init(rows: m.rows, cols: m.cols, space: space)
        let w = space.width
        for k in 0..<(m.rows * m.cols) { storage[k * w] = m.data[k] }
    }

    @inline(__always) public func offset(_ i: Int, _ j: Int) -> Int { (i + j * rows) * space.width }

    public func value(_ i: Int, _ j: Int) -> Double { storage[offset(i, j)] }

    public func scalar(_ i: Int, _ j: Int) -> ScalarJet {
        var s = ScalarJet(space: space)
        let o = offset(i, j)
        for k in 0..<space.width { s.storage[k] = storage[o + k] }
        return s
    }

    /// The values, without derivatives.
    public var valueMatrix: Matrix {
        var m = Matrix(rows: rows, cols: cols)
        for k in 0..<(rows * cols) { m.data[k] = storage[k * space.width] }
        return m
    }

    /// ∂/∂θi of every entry.
    public func firstDerivative(_ i: Int) -> Matrix {
        var m = Matrix(rows: rows, cols: cols)
        for k in 0..<(rows * cols) { m.data[k] = storage[k * space.width + 1 + i] }
        return m
    }

    /// ∂²/∂θi∂θj of every entry.
    public func secondDerivative(_ i: Int, _ j: Int) -> Matrix {
        var m = Matrix(rows: rows, cols: cols)
        let s = space.secondIndex(i, j)
        for k in 0..<(rows * cols) { m.data[k] = storage[k * space.width + s] }
        return m
    }
}
