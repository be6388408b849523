// The wire form of a site's θ-free sums (`SiteBlocks`, a Math type without
// Codable). Decoding checks that the parts fit together before any index is
// used; whether they fit the model is `SiteBlocks.inconsistency`.

import Math

/// `SiteBlocks` as it travels in a prepare answer, with snake_case keys.
struct WireSiteBlocks: Codable {
    struct Tail: Codable {
        var factor: Int
        var levels: Int
        var offset: Int
        enum CodingKeys: String, CodingKey { case factor, levels, offset }
    }
    struct Levels: Codable {
        var factor: Int
        var levels: Int
        var dimension: Int
        var zz: [Double]
        var zw: [Double]
        var crossStart: [Int]
        var crossColumn: [Int]
        var crossValues: [Double]
        enum CodingKeys: String, CodingKey {
            case factor, levels, dimension, zz, zw
            case crossStart = "cross_start", crossColumn = "cross_column", crossValues = "cross_values"
        }
    }
    var width: Int
    var rows: Int
    var first: Levels?
    var siteFactor: Int?
    var tail: [Tail]
    var tailDimension: Int
    var tt: [Double]
    var tw: [Double]
    var ww: [Double]
    enum CodingKeys: String, CodingKey {
        case width, rows, first, siteFactor = "site_factor", tail, tailDimension = "tail_dimension", tt, tw, ww
        case wwEntries = "ww_entries"
    }

    /// [X y]ᵀ[X y] by its nonzero entries: with crossed factors its leading
    /// columns are the site's levels' z columns, and a row has one level, so
    /// most of the width² entries are exact zeros.
    struct Entries: Codable {
        /// Column-major positions, ascending.
        var at: [Int]
        var values: [Double]
    }

    /// Sent as entries when at most a third of ww is nonzero (the same
    /// numbers either way; a model without crossed factors keeps the dense form).
    static func sparseForm(_ ww: [Double]) -> Entries? {
        let nonzero = ww.indices.filter { ww[$0].bitPattern != 0 }   // −0 is sent as itself
        guard nonzero.count * 3 <= ww.count else { return nil }
        return Entries(at: nonzero, values: nonzero.map { ww[$0] })
    }

    func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(width, forKey: .width)
        try c.encode(rows, forKey: .rows)
        try c.encodeIfPresent(first, forKey: .first)
        try c.encodeIfPresent(siteFactor, forKey: .siteFactor)
        try c.encode(tail, forKey: .tail)
        try c.encode(tailDimension, forKey: .tailDimension)
        try c.encode(tt, forKey: .tt)
        try c.encode(tw, forKey: .tw)
        if let entries = Self.sparseForm(ww) { try c.encode(entries, forKey: .wwEntries) } else { try c.encode(ww, forKey: .ww) }
    }

    init(_ b: SiteBlocks) {
        width = b.width; rows = b.rows; siteFactor = b.siteFactor; tailDimension = b.tailDimension
        tt = b.tt; tw = b.tw; ww = b.ww
        tail = b.tail.map { Tail(factor: $0.factor, levels: $0.levels, offset: $0.offset) }
        first = b.first.map {
            Levels(factor: $0.factor, levels: $0.levels, dimension: $0.dimension, zz: $0.zz, zw: $0.zw,
                   crossStart: $0.crossStart, crossColumn: $0.crossColumn, crossValues: $0.crossValues)
        }
    }

    var blocks: SiteBlocks {
        SiteBlocks(width: width, rows: rows,
                   first: first.map { .init(factor: $0.factor, levels: $0.levels, dimension: $0.dimension, zz: $0.zz, zw: $0.zw,
                                            crossStart: $0.crossStart, crossColumn: $0.crossColumn, crossValues: $0.crossValues) },
                   siteFactor: siteFactor, tail: tail.map { .init(factor: $0.factor, levels: $0.levels, offset: $0.offset) },
                   tailDimension: tailDimension, tt: tt, tw: tw, ww: ww)
    }

    /// Decodes and refuses blocks whose parts do not fit together: lengths,
    /// offsets, index ranges and counts within `ProtocolLimits`.
    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        width = try c.decode(Int.self, forKey: .width)
        rows = try c.decode(Int.self, forKey: .rows)
        first = try c.decodeIfPresent(Levels.self, forKey: .first)
        siteFactor = try c.decodeIfPresent(Int.self, forKey: .siteFactor)
        tail = try c.decode([Tail].self, forKey: .tail)
        tailDimension = try c.decode(Int.self, forKey: .tailDimension)
        tt = try c.decode([Double].self, forKey: .tt)
        tw = try c.decode([Double].self, forKey: .tw)
        if let entries = try c.decodeIfPresent(Entries.self, forKey: .wwEntries) {
            guard !c.contains(.ww) else {
                throw ProtocolError.inconsistent(field: LineCodec.path(decoder.codingPath + [CodingKeys.wwEntries]), reason: "comes with ww; send one of them")
            }
            let cells = width * width
            guard (1...(ProtocolLimits.maxFixedColumns + 1)).contains(width), entries.at.count == entries.values.count,
                  zip(entries.at, entries.at.dropFirst()).allSatisfy({ $0 < $1 }),
                  entries.at.allSatisfy({ (0..<cells).contains($0) }) else {
                throw ProtocolError.inconsistent(field: LineCodec.path(decoder.codingPath + [CodingKeys.wwEntries]),
                                                 reason: "needs ascending positions below width², one value each")
            }
            var dense = [Double](repeating: 0, count: cells)
            for (k, v) in zip(entries.at, entries.values) { dense[k] = v }
            ww = dense
        } else {
            ww = try c.decode([Double].self, forKey: .ww)
        }
        if let why = problem() { throw ProtocolError.inconsistent(field: LineCodec.path(decoder.codingPath + [why.key]), reason: why.reason) }
    }

    /// The first part that does not fit, if any.
    func problem() -> (key: CodingKeys, reason: String)? {
        guard (1...(ProtocolLimits.maxFixedColumns + 1)).contains(width) else { return (.width, "is out of range") }
        guard (0...ProtocolLimits.maxRows).contains(rows) else { return (.rows, "is out of range") }
        guard (0...ProtocolLimits.maxTailDimension).contains(tailDimension) else {
            return (.tailDimension, "exceeds the largest dense tail, \(ProtocolLimits.maxTailDimension)")
        }
        var end = 0
        for t in tail {
            guard t.factor >= 0, (0...ProtocolLimits.maxTailDimension).contains(t.levels), t.offset >= end,
                  t.offset <= tailDimension else { return (.tail, "has a factor out of range or out of order") }
            end = t.offset + t.levels
        }
        guard end <= tailDimension else { return (.tail, "does not fit in tail_dimension") }
        if let s = siteFactor, s < 0 { return (.siteFactor, "is negative") }
        guard ww.count == width * width else { return (.ww, "has \(ww.count) values; width² is \(width * width)") }
        guard tt.count == tailDimension * tailDimension else { return (.tt, "has \(tt.count) values; tail_dimension² is \(tailDimension * tailDimension)") }
        guard tw.count == tailDimension * width else { return (.tw, "has \(tw.count) values; tail_dimension × width is \(tailDimension * width)") }
        guard (ww + tt + tw).allSatisfy(\.isFinite) else { return (.ww, "holds a non-finite number") }
        if let f = first {
            guard f.factor >= 0, (0...ProtocolLimits.maxGroupLevels).contains(f.levels),
                  (1...ProtocolLimits.maxFactorDimension).contains(f.dimension) else { return (.first, "has a count out of range") }
            let r = f.dimension
            guard f.zz.count == f.levels * r * r, f.zw.count == f.levels * r * width else {
                return (.first, "has per-level sums of the wrong length")
            }
            guard f.crossStart.count == f.levels + 1, f.crossStart.first == 0, f.crossStart.last == f.crossColumn.count,
                  zip(f.crossStart, f.crossStart.dropFirst()).allSatisfy({ $0 <= $1 }),
                  f.crossValues.count == f.crossColumn.count * r,
                  f.crossColumn.allSatisfy({ (0..<tailDimension).contains($0) }) else {
                return (.first, "has cross products that do not fit together")
            }
            guard (f.zz + f.zw + f.crossValues).allSatisfy(\.isFinite) else { return (.first, "holds a non-finite number") }
        }
        return nil
    }
}

extension SiteBlocks {
    /// Checks that blocks received from a site fit the model (factor indices
    /// and dimensions, width, tail layout within `ProtocolLimits`), so a
    /// faulty or hostile peer cannot make the coordinator index out of
    /// bounds. Returns a reason, or nil when valid.
    public func inconsistency(structure: CovarianceStructure, width expectedWidth: Int) -> String? {
        guard width == expectedWidth else { return "blocks have \(width) columns; the model has \(expectedWidth)" }
        guard rows >= 0 else { return "negative row count" }
        var td = 0
        for t in tail {
            guard (0..<structure.factorCount).contains(t.factor), t.levels >= 0, t.levels <= ProtocolLimits.maxTailDimension,
                  t.offset == td else {
                return "tail layout is inconsistent"
            }
            td += t.levels * structure.factorDimension(t.factor)
        }
        guard td == tailDimension, td <= ProtocolLimits.maxTailDimension else { return "tail dimension is inconsistent" }
        guard tt.count == td * td, tw.count == td * width, ww.count == width * width else { return "block sizes do not match" }
        if let f = first {
            guard (0..<structure.factorCount).contains(f.factor), f.dimension == structure.factorDimension(f.factor),
                  f.levels >= 0, f.levels <= ProtocolLimits.maxGroupLevels else { return "per-level blocks are inconsistent" }
            let r = f.dimension
            guard f.zz.count == f.levels * r * r, f.zw.count == f.levels * r * width, f.crossStart.count == f.levels + 1,
                  f.crossStart.first == 0, f.crossStart.last == f.crossColumn.count,
                  zip(f.crossStart, f.crossStart.dropFirst()).allSatisfy({ $0 <= $1 }),
                  f.crossValues.count == f.crossColumn.count * r,
                  f.crossColumn.allSatisfy({ (0..<td).contains($0) }),
                  (f.zz + f.zw + f.crossValues).allSatisfy(\.isFinite) else { return "per-level blocks are inconsistent" }
        }
        guard (tt + tw + ww).allSatisfy(\.isFinite) else { return "blocks contain non-finite numbers" }
        if let s = siteFactor, !(0..<structure.factorCount).contains(s) { return "site factor out of range" }
        return nil
    }
}
