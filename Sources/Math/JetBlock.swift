// Blocks of a blocked factorization as types. A block is a small matrix of
// jets (or of plain values: jets of order 0) in raw storage; its methods are
// the blocked operations of JetBlas, so a factorization is written as its
// mathematics (F ← chol(T₁ᵀ ZZ T₁ + I), Y ← F⁻¹ T₁ᵀ C, …) and the pointer
// arithmetic stays here.

/// A view of a rows×cols block of jets: entry (i, j)'s `width` numbers are
/// contiguous, entries in column-major order (JetMatrix's layout). It owns
/// nothing; the memory is a `JetArena`'s or a caller's.
struct JetBlock {
    let base: UnsafeMutablePointer<Double>
    let rows: Int
    let cols: Int
    let width: Int

    @inline(__always) func entry(_ i: Int, _ j: Int) -> UnsafeMutablePointer<Double> { base + (i + j * rows) * width }

    /// The same memory seen as a rows×cols block of a smaller shape (a
    /// workspace sized for the largest level, used by each level in turn).
    @inline(__always) func reshaped(rows: Int, cols: Int) -> JetBlock {
        precondition(rows * cols <= self.rows * self.cols, "a reshaped block must fit its memory")
        return JetBlock(base: base, rows: rows, cols: cols, width: width)
    }

    @inline(__always) func setZero() { base.update(repeating: 0, count: rows * cols * width) }

    /// Adds `x` to the value of every diagonal entry.
    @inline(__always) func addToDiagonal(_ x: Double) {
        for i in 0..<min(rows, cols) { entry(i, i)[0] += x }
    }

    /// self += other, entry by entry.
    @inline(__always) func add(_ other: JetBlock) {
        for q in 0..<(rows * cols * width) { base[q] += other.base[q] }
    }

    /// self += sign · op(a) · op(b).
    @inline(__always)
    func addProduct<K: JetArithmetic>(_ a: JetBlock, transposed ta: Bool = false, _ b: JetBlock, transposed tb: Bool = false,
                                      sign: Double = 1, _ ops: JetOps<K>) {
        JetBlas.addProduct(base, m: rows, n: cols, inner: ta ? a.rows : a.cols, a.base, ar: a.rows, transposeA: ta,
                           b.base, br: b.rows, transposeB: tb, sign: sign, w: width, kernel: ops.kernel)
    }

    /// self += sign · op(a) · c, c constant.
    @inline(__always)
    func addProduct(_ a: JetBlock, transposed ta: Bool = false, _ c: ConstantBlock, sign: Double = 1) {
        JetBlas.addProduct(base, m: rows, inner: c.rows, a.base, ar: a.rows, transposeA: ta,
                           constant: c.base, ccols: c.cols, sign: sign, w: width)
    }

    /// self += sign · op(c) · b, c constant.
    @inline(__always)
    func addProduct(_ c: ConstantBlock, transposed tc: Bool = false, _ b: JetBlock, sign: Double = 1) {
        JetBlas.addProduct(base, m: rows, inner: b.rows, constant: c.base, crows: c.rows, transposeC: tc,
                           b.base, bcols: b.cols, sign: sign, w: width)
    }

    /// self ← its lower Cholesky factor (upper triangle set to zero).
    @inline(__always)
    func cholesky<K: JetArithmetic>(_ ops: JetOps<K>) throws {
        try JetBlas.cholesky(base, n: rows, w: width, kernel: ops.kernel, scratch: ops.scratch)
    }

    /// self ← L⁻¹ self, L lower triangular.
    @inline(__always)
    func solveLower<K: JetArithmetic>(_ l: JetBlock, _ ops: JetOps<K>) {
        JetBlas.solveLower(base, n: rows, cols: cols, l.base, w: width, kernel: ops.kernel, scratch: ops.scratch)
    }

    /// sink += scale · Σᵢ log selfᵢᵢ, one diagonal entry after another
    /// (log|L|² of a Cholesky factor L with scale 2).
    @inline(__always)
    func addLogDiagonal<K: JetArithmetic>(into sink: UnsafeMutablePointer<Double>, scale: Double, _ ops: JetOps<K>) {
        for i in 0..<min(rows, cols) { ops.kernel.logAdd(sink, entry(i, i), scale) }
    }

    /// dst[rows[i], cols[j]] += self[i, j]; `cols` nil means columns 0..<cols.
    @inline(__always)
    func scatterAdd(into dst: JetBlock, rows rowIndex: UnsafePointer<Int>, cols colIndex: UnsafePointer<Int>?) {
        let w = width
        for j in 0..<cols {
            let cj = colIndex?[j] ?? j
            for i in 0..<rows {
                let src = entry(i, j), out = dst.entry(rowIndex[i], cj)
                for q in 0..<w { out[q] += src[q] }
            }
        }
    }
}

/// A rows×cols block of plain values (no derivatives), column-major.
struct ConstantBlock {
    let base: UnsafePointer<Double>
    let rows: Int
    let cols: Int
}

/// The scalar arithmetic a block operation runs with, and one entry of
/// scratch space for it.
struct JetOps<K: JetArithmetic> {
    let kernel: K
    let scratch: UnsafeMutablePointer<Double>
}

/// Memory for the blocks of one factorization, freed with the arena.
final class JetArena {
    let width: Int
    private var chunks: [UnsafeMutablePointer<Double>] = []

    init(width: Int) { self.width = width }
    deinit { for p in chunks { p.deallocate() } }

    /// `count` doubles, zeroed.
    func doubles(_ count: Int) -> UnsafeMutablePointer<Double> {
        let p = UnsafeMutablePointer<Double>.allocate(capacity: max(count, 1))
        p.initialize(repeating: 0, count: max(count, 1))
        chunks.append(p)
        return p
    }

    /// A zeroed rows×cols block of jets.
    func block(_ rows: Int, _ cols: Int) -> JetBlock {
        JetBlock(base: doubles(rows * cols * width), rows: rows, cols: cols, width: width)
    }

    /// A block holding a copy of `m` (same width).
    func block(copying m: JetMatrix) -> JetBlock {
        precondition(m.space.width == width, "a copied block must have the arena's width")
        let b = block(m.rows, m.cols)
        m.storage.withUnsafeBufferPointer { b.base.update(from: $0.baseAddress!, count: $0.count) }
        return b
    }

    /// One scalar jet (zeroed).
    func scalar() -> UnsafeMutablePointer<Double> { doubles(width) }

    /// Operations with `kernel` and scratch space from this arena.
    func ops<K: JetArithmetic>(_ kernel: K) -> JetOps<K> { JetOps(kernel: kernel, scratch: scalar()) }
}

extension JetMatrix {
    /// A matrix holding a copy of `block` (same width as `space`).
    init(_ block: JetBlock, space: JetSpace) {
        precondition(block.width == space.width, "block and space widths differ")
        self.init(rows: block.rows, cols: block.cols, space: space)
        storage.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: block.base, count: $0.count) }
    }
}

extension ScalarJet {
    /// A scalar holding a copy of the jet at `p`.
    init(_ p: UnsafePointer<Double>, space: JetSpace) {
        self.init(space: space)
        storage.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: p, count: $0.count) }
    }
}

/// Pointer view of a site's per-level blocks (SiteBlocks.LevelBlocks).
struct LevelBlocksView {
    let dimension: Int
    let width: Int
    let zzBase: UnsafePointer<Double>
    let zwBase: UnsafePointer<Double>
    let crossStart: UnsafePointer<Int>
    let crossColumn: UnsafePointer<Int>
    let crossValues: UnsafePointer<Double>

    /// Σ z zᵀ over level l's rows (r×r).
    @inline(__always) func zz(_ l: Int) -> ConstantBlock {
        ConstantBlock(base: zzBase + l * dimension * dimension, rows: dimension, cols: dimension)
    }
    /// Σ z [x y]ᵀ over level l's rows (r×width).
    @inline(__always) func zw(_ l: Int) -> ConstantBlock {
        ConstantBlock(base: zwBase + l * dimension * width, rows: dimension, cols: width)
    }
    /// Level l's cross products with the tail columns it meets: r×count
    /// values and the count tail columns.
    @inline(__always) func crossing(_ l: Int) -> (values: ConstantBlock, columns: UnsafePointer<Int>, count: Int) {
        let cs = crossStart[l], nc = crossStart[l + 1] - cs
        return (ConstantBlock(base: crossValues + cs * dimension, rows: dimension, cols: nc), crossColumn + cs, nc)
    }
    /// The most tail columns one level meets.
    func maxCrossing(levels: Int) -> Int {
        var m = 0
        for l in 0..<levels { m = max(m, crossStart[l + 1] - crossStart[l]) }
        return m
    }
}

extension SiteBlocks.LevelBlocks {
    /// Runs `body` with a pointer view of these blocks (`width` columns of [X y]).
    func withView<R>(width: Int, _ body: (LevelBlocksView) throws -> R) rethrows -> R {
        try zz.withUnsafeBufferPointer { zzp in
            try zw.withUnsafeBufferPointer { zwp in
                try crossStart.withUnsafeBufferPointer { csp in
                    try crossColumn.withUnsafeBufferPointer { ccp in
                        try crossValues.withUnsafeBufferPointer { cvp in
                            let empty = UnsafeMutablePointer<Double>.allocate(capacity: 1)
                            let emptyInt = UnsafeMutablePointer<Int>.allocate(capacity: 1)
                            defer { empty.deallocate(); emptyInt.deallocate() }
                            return try body(LevelBlocksView(dimension: dimension, width: width,
                                                            zzBase: zzp.baseAddress ?? UnsafePointer(empty),
                                                            zwBase: zwp.baseAddress ?? UnsafePointer(empty),
                                                            crossStart: csp.baseAddress!,
                                                            crossColumn: ccp.baseAddress ?? UnsafePointer(emptyInt),
                                                            crossValues: cvp.baseAddress ?? UnsafePointer(empty)))
                        }
                    }
                }
            }
        }
    }
}
