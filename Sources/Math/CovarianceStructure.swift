// lme4's parametrization of the random-effects covariance: each term (r | g)
// has a lower-triangular r×r factor T whose entries, column by column, are
// the term's θ; diagonal entries are bounded below by 0. Terms sharing one
// grouping factor form a "factor block" whose T is block diagonal.

/// How θ is laid out over the random-effects terms and their grouping factors.
public struct CovarianceStructure: Sendable, Equatable {
    public struct Term: Sendable, Equatable {
        /// Number of random-effects columns r.
        public var dimension: Int
        /// Index of the grouping factor this term belongs to.
        public var factor: Int
        public init(dimension: Int, factor: Int) { self.dimension = dimension; self.factor = factor }
    }

    public var terms: [Term]
    public let factorCount: Int

    public init(terms: [Term]) {
        self.terms = terms
        factorCount = (terms.map(\.factor).max() ?? -1) + 1
    }

    public var thetaCount: Int { terms.reduce(0) { $0 + $1.dimension * ($1.dimension + 1) / 2 } }

    /// Offset of each term's θ in the full vector.
    public var thetaOffsets: [Int] {
        var out: [Int] = [], o = 0
        for t in terms { out.append(o); o += t.dimension * (t.dimension + 1) / 2 }
        return out
    }

    /// lme4's starting value: identity factors.
    public var initialTheta: [Double] {
        var out: [Double] = []
        for t in terms { for j in 0..<t.dimension { for i in j..<t.dimension { out.append(i == j ? 1 : 0) } } }
        return out
    }

    /// Lower bounds: 0 for diagonal entries, −∞ otherwise.
    public var lowerBounds: [Double] {
        var out: [Double] = []
        for t in terms { for j in 0..<t.dimension { for i in j..<t.dimension { out.append(i == j ? 0 : -.infinity) } } }
        return out
    }

    /// Dimension of a factor block (sum of its terms' r).
    public func factorDimension(_ f: Int) -> Int {
        terms.filter { $0.factor == f }.reduce(0) { $0 + $1.dimension }
    }

    /// Entries of a factor block's T: (row, col, θ index).
    public func factorEntries(_ f: Int) -> [(row: Int, col: Int, theta: Int)] {
        var out: [(Int, Int, Int)] = []
        var base = 0
        for (t, off) in zip(terms, thetaOffsets) where t.factor == f {
            var k = off
            for j in 0..<t.dimension { for i in j..<t.dimension { out.append((base + i, base + j, k)); k += 1 } }
            base += t.dimension
        }
        return out
    }

    /// The θ indices a factor block depends on, ascending.
    public func factorParameters(_ f: Int) -> [Int] { factorEntries(f).map(\.theta).sorted() }

    /// T of factor f as a plain matrix.
    public func factorMatrix(_ f: Int, theta: [Double]) -> Matrix {
        let r = factorDimension(f)
        var m = Matrix(rows: r, cols: r)
        for e in factorEntries(f) { m[e.row, e.col] = theta[e.theta] }
        return m
    }

    /// T of factor f as a jet. `parameterMap[k]` is the θ index of jet
    /// parameter k; θ indices not in the map are held constant.
    public func factorJet(_ f: Int, theta: [Double], space: JetSpace, parameterMap: [Int]) -> JetMatrix {
        let r = factorDimension(f)
        var m = JetMatrix(rows: r, cols: r, space: space)
        for e in factorEntries(f) {
            let o = m.offset(e.row, e.col)
            m.storage[o] = theta[e.theta]
            if space.order >= 1, let k = parameterMap.firstIndex(of: e.theta) { m.storage[o + 1 + k] = 1 }
        }
        return m
    }

    /// lme4's singularity check: a diagonal θ within `tolerance` of its bound.
    public func isSingular(theta: [Double], tolerance: Double = 1e-4) -> Bool {
        zip(theta, lowerBounds).contains { $1 == 0 && $0 < tolerance }
    }
}
