// The messages of a fit's rounds, written and read field by field. Why: a
// fit sends an evaluate request and reads its answer once per site per
// round (537 sites × 14 rounds for ohio), and the Encodable/Decodable path
// (a tree of boxed nodes, keys sorted per object, a coding path and a
// generic container per field) cost more than the numbers themselves:
// about 20 µs of a 60 µs exchange. Here the keys are written in their sorted
// order as literals and read from the parsed line directly.
//
// One rule keeps this a fast path and not a second codec: it only handles
// the shapes it knows, and returns nil for anything else (a field of the
// wrong type, a missing field, a non-finite number, a value its message's
// checks refuse, an optional part it does not write). The Codable path then
// handles the line as it always has, with its errors. JSONLineCodecTests
// checks both paths give the same bytes and values on every such message.

/// The hot messages, written without an Encoder.
enum DirectLineWriter {
    /// An evaluate request's line, or nil for the parts only the Codable path writes (GEE, crossed points).
    static func evaluate(_ r: EvaluateRequest, id: Int) -> String? {
        guard r.gee == nil, r.crossed == nil, finite(r.theta), finite(r.beta ?? []),
              (r.thetas ?? []).allSatisfy(finite) else { return nil }
        var o = ObjectWriter()
        if let beta = r.beta { o.doubles("beta", beta) }
        if let form = r.crossedForm { o.string("crossed_form", form) }
        if let d = r.derivatives { o.string("derivatives", d) }
        o.int("id", id)
        if let lowRank = r.lowRank { o.bool("low_rank", lowRank) }
        if let n = r.nAGQ { o.int("nagq", n) }
        o.int("order", r.order)
        o.string("session", r.session)
        o.doubles("theta", r.theta)
        if let thetas = r.thetas { o.array("thetas", thetas) { t, out in ObjectWriter.doubles(t, into: &out) } }
        o.string("type", "evaluate")
        return o.finish()
    }

    static func glmmContribution(_ r: GLMMContributionReply, id: Int) -> String? {
        guard finite(r.objective) else { return nil }
        var o = ObjectWriter()
        o.int("id", id)
        o.doubles("objective", r.objective)
        o.int("order", r.order)
        o.int("parameters", r.parameters)
        o.int("rows", r.rows)
        o.string("session", r.session)
        o.string("type", "glmm_contribution")
        return o.finish()
    }

    static func contribution(_ r: ContributionReply, id: Int) -> String? {
        guard finite(r.logDet), finite(r.schur.values),
              (r.points ?? []).allSatisfy({ finite($0.logDet) && finite($0.schur.values) }) else { return nil }
        var o = ObjectWriter()
        o.int("id", id)
        o.doubles("log_det", r.logDet)
        if let points = r.points {
            o.array("points", points) { p, out in
                var inner = ObjectWriter(taking: &out)
                inner.doubles("log_det", p.logDet)
                inner.key("schur")
                schur(p.schur, into: &inner.out)
                out = inner.close()
            }
        }
        o.int("rows", r.rows)
        o.key("schur")
        schur(r.schur, into: &o.out)
        o.string("session", r.session)
        o.string("type", "contribution")
        return o.finish()
    }

    private static func schur(_ m: WireJetMatrix, into out: inout [UInt8]) {
        var o = ObjectWriter(taking: &out)
        o.int("cols", m.cols)
        if let form = m.form { o.string("form", form) }
        o.int("order", m.order)
        o.int("parameters", m.parameters)
        o.int("rows", m.rows)
        o.doubles("values", m.values)
        out = o.close()
    }

    private static func finite(_ values: [Double]) -> Bool { values.allSatisfy(\.isFinite) }

    /// One JSON object, its keys written in the order given (the callers
    /// give them in String order, as the Codable path sorts them).
    struct ObjectWriter {
        var out: [UInt8]
        private var first = true

        init() { out = []; out.reserveCapacity(256); out.append(UInt8(ascii: "{")) }
        /// An object nested in `out`: its bytes are taken over (moved, so
        /// that appending never copies the line) and given back by `close`.
        init(taking out: inout [UInt8]) {
            self.out = []
            swap(&self.out, &out)
            self.out.append(UInt8(ascii: "{"))
        }

        mutating func key(_ name: StaticString) {
            if !first { out.append(UInt8(ascii: ",")) }
            first = false
            out.append(UInt8(ascii: "\""))
            name.withUTF8Buffer { out.append(contentsOf: $0) }
            out.append(UInt8(ascii: "\""))
            out.append(UInt8(ascii: ":"))
        }
        mutating func int(_ name: StaticString, _ value: Int) {
            key(name)
            Self.int(value, into: &out)
        }
        mutating func bool(_ name: StaticString, _ value: Bool) {
            key(name)
            out.append(contentsOf: (value ? "true" : "false").utf8)
        }
        mutating func string(_ name: StaticString, _ value: String) {
            key(name)
            JSONLineWriter.writeString(value, into: &out)
        }
        mutating func doubles(_ name: StaticString, _ values: [Double]) {
            key(name)
            Self.doubles(values, into: &out)
        }
        /// An array of `items`, each written by `element`.
        mutating func array<T>(_ name: StaticString, _ items: [T], _ element: (T, inout [UInt8]) -> Void) {
            key(name)
            out.append(UInt8(ascii: "["))
            for (k, item) in items.enumerated() {
                if k > 0 { out.append(UInt8(ascii: ",")) }
                element(item, &out)
            }
            out.append(UInt8(ascii: "]"))
        }
        mutating func close() -> [UInt8] {
            out.append(UInt8(ascii: "}"))
            return out
        }
        mutating func finish() -> String { String(decoding: close(), as: UTF8.self) }

        static func doubles(_ values: [Double], into out: inout [UInt8]) {
            out.reserveCapacity(out.count + 2 + 25 * values.count)
            out.append(UInt8(ascii: "["))
            for (i, d) in values.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                JSONLineWriter.writeDouble(d, into: &out)
            }
            out.append(UInt8(ascii: "]"))
        }

        /// Decimal digits, as `String(value)` spells them, without the String.
        static func int(_ value: Int, into out: inout [UInt8]) {
            if value < 0 { out.append(UInt8(ascii: "-")) }
            var v = value.magnitude
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { digits in
                var n = 0
                repeat {
                    digits[n] = UInt8(ascii: "0") + UInt8(v % 10)
                    v /= 10
                    n += 1
                } while v > 0
                for k in stride(from: n - 1, through: 0, by: -1) { out.append(digits[k]) }
            }
        }
    }
}

/// The hot messages, read from a parsed line without a Decoder; nil
/// whenever the Codable path should decide (see the top of this file).
enum DirectLineReader {
    private typealias Node = JSONLineDocument.Node

    /// The line's id (nil when absent or null) and type, as LineCodec's
    /// header reads them; nil when the Codable path should decide.
    static func header(_ document: JSONLineDocument) -> (id: Int?, type: String)? {
        let fields = Fields(document)
        guard let fields, case .string(let type)? = fields.node("type") else { return nil }
        guard let idNode = fields.node("id") else { return (nil, type) }
        if case .null = idNode { return (nil, type) }
        guard let id = fields.int(idNode) else { return nil }
        return (id, type)
    }

    static func evaluate(_ document: JSONLineDocument) -> EvaluateRequest? {
        guard let f = Fields(document) else { return nil }
        // The parts only the Codable path reads.
        for key in ["gee", "crossed"] { if let n = f.node(key), !n.isNull { return nil } }
        guard let session = f.string("session"), let theta = f.doubles("theta"), let order = f.int("order"),
              let beta = f.optional("beta", f.doubles), let nAGQ = f.optional("nagq", f.int),
              let thetas = f.optional("thetas", f.doubleArrays), let form = f.optional("crossed_form", f.string),
              let lowRank = f.optional("low_rank", f.bool), let derivatives = f.optional("derivatives", f.string) else { return nil }
        var r = EvaluateRequest(session: session, theta: theta, order: order, beta: beta, nAGQ: nAGQ, thetas: thetas, lowRank: lowRank)
        r.crossedForm = form
        r.derivatives = derivatives
        return r.problem == nil ? r : nil
    }

    static func glmmContribution(_ document: JSONLineDocument) -> GLMMContributionReply? {
        guard let f = Fields(document), let session = f.string("session"), let rows = f.int("rows"),
              let parameters = f.int("parameters"), let order = f.int("order"), let objective = f.doubles("objective") else { return nil }
        let r = GLMMContributionReply(session: session, rows: rows, parameters: parameters, order: order, objective: objective)
        return r.problem == nil ? r : nil
    }

    static func contribution(_ document: JSONLineDocument) -> ContributionReply? {
        guard let f = Fields(document), let session = f.string("session"), let rows = f.int("rows"),
              let schurNode = f.node("schur"), let schur = matrix(schurNode, document), let logDet = f.doubles("log_det"),
              let points = f.optional("points", { node -> [ContributionReply.Point]? in
                  guard case .array(let items) = node else { return nil }
                  var out: [ContributionReply.Point] = []
                  for item in items {
                      guard let p = Fields(item, document), let s = p.node("schur"), let m = matrix(s, document),
                            let l = p.doubles("log_det") else { return nil }
                      out.append(ContributionReply.Point(schur: m, logDet: l))
                  }
                  return out
              }) else { return nil }
        let r = ContributionReply(session: session, rows: rows, schur: schur, logDet: logDet, points: points)
        return r.problem == nil ? r : nil
    }

    private static func matrix(_ node: Node, _ document: JSONLineDocument) -> WireJetMatrix? {
        guard let f = Fields(node, document), let rows = f.int("rows"), let cols = f.int("cols"), let parameters = f.int("parameters"),
              let order = f.int("order"), let values = f.doubles("values"), let form = f.optional("form", f.string) else { return nil }
        var m = WireJetMatrix(rows: rows, cols: cols, parameters: parameters, order: order, values: values)
        m.form = form
        return m.problem == nil ? m : nil
    }

    /// An object's fields, each read as the Codable path reads it (the
    /// first of duplicate keys; integers as JSONLineDocument.integer).
    private struct Fields {
        let entries: [(key: String, node: Node)]
        let document: JSONLineDocument

        init?(_ document: JSONLineDocument) { self.init(document.root, document) }
        init?(_ node: Node, _ document: JSONLineDocument) {
            guard case .object(let entries) = node else { return nil }
            self.entries = entries
            self.document = document
        }

        func node(_ key: String) -> Node? {
            for e in entries where e.key == key { return e.node }
            return nil
        }
        func int(_ node: Node) -> Int? {
            guard case .number(let s, let e) = node, let v = document.integer(s, e) else { return nil }
            return Int(exactly: v)
        }
        func int(_ key: String) -> Int? { node(key).flatMap(int) }
        func string(_ node: Node) -> String? {
            guard case .string(let s) = node else { return nil }
            return s
        }
        func string(_ key: String) -> String? { node(key).flatMap(string) }
        func bool(_ node: Node) -> Bool? {
            guard case .bool(let b) = node else { return nil }
            return b
        }
        func doubles(_ node: Node) -> [Double]? {
            guard case .array(let items) = node else { return nil }
            var values: [Double] = []
            values.reserveCapacity(items.count)
            for item in items {
                guard case .number(let s, let e) = item, let d = document.double(s, e) else { return nil }
                values.append(d)
            }
            return values
        }
        func doubles(_ key: String) -> [Double]? { node(key).flatMap(doubles) }
        func doubleArrays(_ node: Node) -> [[Double]]? {
            guard case .array(let items) = node else { return nil }
            var out: [[Double]] = []
            for item in items {
                guard let d = doubles(item) else { return nil }
                out.append(d)
            }
            return out
        }
        /// An optional field as decodeIfPresent reads it: absent or null is
        /// `.some(nil)`; a value `read` refuses is nil (the Codable path decides).
        func optional<T>(_ key: String, _ read: (Node) -> T?) -> T?? {
            guard let n = node(key), !n.isNull else { return .some(nil) }
            guard let v = read(n) else { return nil }
            return .some(v)
        }
    }
}

// Every field given, for the reader above (the public inits take model types).
extension GLMMContributionReply {
    init(session: String, rows: Int, parameters: Int, order: Int, objective: [Double]) {
        self.session = session; self.rows = rows; self.parameters = parameters; self.order = order; self.objective = objective
    }
}
extension WireJetMatrix {
    init(rows: Int, cols: Int, parameters: Int, order: Int, values: [Double]) {
        self.rows = rows; self.cols = cols; self.parameters = parameters; self.order = order; self.values = values
    }
}
extension ContributionReply {
    init(session: String, rows: Int, schur: WireJetMatrix, logDet: [Double], points: [Point]?) {
        self.session = session; self.rows = rows; self.schur = schur; self.logDet = logDet; self.points = points
    }
}
extension ContributionReply.Point {
    init(schur: WireJetMatrix, logDet: [Double]) { self.schur = schur; self.logDet = logDet }
}

extension JSONLineDocument.Node {
    var isNull: Bool { if case .null = self { return true }; return false }
}
