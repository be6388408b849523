/// A dense column-major matrix of doubles. Small and explicit: fedmix's
/// matrices are p×p, r×r and q_site×q_site blocks, never n×n.
public struct Matrix: Sendable, Equatable {
    public var rows: Int
    public var cols: Int
    public var data: [Double]

    public init(rows: Int, cols: Int, data: [Double]) {
        precondition(data.count == rows * cols, "matrix data does not match its shape")
        self.rows = rows; self.cols = cols; self.data = data
    }
    public init(rows: Int, cols: Int) { self.init(rows: rows, cols: cols, data: Array(repeating: 0, count: rows * cols)) }
    public static func identity(_ n: Int) -> Matrix {
        var m = Matrix(rows: n, cols: n)
        for i in 0..<n { m[i, i] = 1 }
        return m
    }
    @inline(__always) public subscript(i: Int, j: Int) -> Double {
        get { data[i + j * rows] }
        set { data[i + j * rows] = newValue }
    }
}
