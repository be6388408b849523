// JSON form of the model specification. Hand-written so that the wire format
// is small, readable in the audit log, and independent of Swift's synthesized
// enum encodings.

import Math

extension Expr: Codable {
    private enum Key: String, CodingKey { case num, `var`, level, missing, fill, with, fn, arg, op, args }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: Key.self)
        if let v = try c.decodeIfPresent(Double.self, forKey: .num) { self = .number(v); return }
        if let v = try c.decodeIfPresent(String.self, forKey: .var) { self = .variable(v); return }
        if let v = try c.decodeIfPresent([String].self, forKey: .level) {
            guard v.count == 2 else {
                throw DecodingError.dataCorruptedError(forKey: .level, in: c,
                    debugDescription: "an indicator needs [variable, level]")
            }
            self = .indicator(v[0], level: v[1]); return
        }
        if let v = try c.decodeIfPresent(String.self, forKey: .missing) { self = .isMissing(v); return }
        if let v = try c.decodeIfPresent(String.self, forKey: .fill) { self = .filled(v, with: try c.decode(Double.self, forKey: .with)); return }
        if let f = try c.decodeIfPresent(UnaryFunction.self, forKey: .fn) {
            self = .unary(f, try c.decode(Expr.self, forKey: .arg)); return
        }
        if let op = try c.decodeIfPresent(BinaryOperator.self, forKey: .op) {
            let args = try c.decode([Expr].self, forKey: .args)
            guard args.count == 2 else {
                throw DecodingError.dataCorruptedError(forKey: .args, in: c,
                    debugDescription: "a binary operator needs two arguments")
            }
            self = .binary(op, args[0], args[1]); return
        }
        throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
            debugDescription: "an expression needs one of num, var, level, missing, fill, fn, op"))
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        switch self {
        case .number(let v): try c.encode(v, forKey: .num)
        case .variable(let v): try c.encode(v, forKey: .var)
        case .indicator(let v, let l): try c.encode([v, l], forKey: .level)
        case .isMissing(let v): try c.encode(v, forKey: .missing)
        case .filled(let v, let x): try c.encode(v, forKey: .fill); try c.encode(x, forKey: .with)
        case .unary(let f, let a): try c.encode(f, forKey: .fn); try c.encode(a, forKey: .arg)
        case .binary(let op, let a, let b): try c.encode(op, forKey: .op); try c.encode([a, b], forKey: .args)
        }
    }
}

extension Grouping: Codable {
    private enum Key: String, CodingKey { case kind, variables, levels }
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: Key.self)
        switch try c.decode(String.self, forKey: .kind) {
        case "site": self = .site
        case "within_site": self = .withinSite(try c.decode([String].self, forKey: .variables))
        case "crossed":
            let vs = try c.decode([String].self, forKey: .variables)
            let levels = try c.decode([String].self, forKey: .levels)
            guard vs.count == 1, !levels.isEmpty, Set(levels).count == levels.count else {
                throw DecodingError.dataCorruptedError(forKey: .levels, in: c,
                    debugDescription: "a crossed grouping needs one variable and its distinct levels")
            }
            self = .crossed(vs[0], levels: levels)
        default:
            throw DecodingError.dataCorruptedError(forKey: .kind, in: c,
                debugDescription: "grouping kind must be \"site\", \"within_site\" or \"crossed\"")
        }
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        switch self {
        case .site: try c.encode("site", forKey: .kind)
        case .withinSite(let vs): try c.encode("within_site", forKey: .kind); try c.encode(vs, forKey: .variables)
        case .crossed(let v, let levels):
            try c.encode("crossed", forKey: .kind); try c.encode([v], forKey: .variables); try c.encode(levels, forKey: .levels)
        }
    }
}

extension Response: Codable {
    private enum Key: String, CodingKey { case value, successes, failures }
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: Key.self)
        if let v = try c.decodeIfPresent(Expr.self, forKey: .value) { self = .value(v); return }
        self = .binomial(successes: try c.decode(Expr.self, forKey: .successes),
                         failures: try c.decode(Expr.self, forKey: .failures))
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        switch self {
        case .value(let e): try c.encode(e, forKey: .value)
        case .binomial(let s, let f): try c.encode(s, forKey: .successes); try c.encode(f, forKey: .failures)
        }
    }
}

extension ModelSpec: Codable {
    enum CodingKeys: String, CodingKey { case formula, family, link, response, fixed, terms, weights, offset, filter, alsoRequired = "also_required", cluster, gee }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        formula = try c.decode(String.self, forKey: .formula)
        family = try c.decodeRaw(Family.self, forKey: .family)
        link = try c.decodeRaw(Link.self, forKey: .link)
        response = try c.decode(Response.self, forKey: .response)
        fixed = try c.decode([DesignColumn].self, forKey: .fixed)
        terms = try c.decode([RandomTerm].self, forKey: .terms)
        weights = try c.decodeIfPresent(Expr.self, forKey: .weights)
        offset = try c.decodeIfPresent(Expr.self, forKey: .offset)
        filter = try c.decodeIfPresent(Expr.self, forKey: .filter)
        alsoRequired = try c.decodeIfPresent([String].self, forKey: .alsoRequired) ?? []
        cluster = try c.decodeIfPresent(Grouping.self, forKey: .cluster)
        gee = try c.decodeIfPresent(GEESpec.self, forKey: .gee)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(formula, forKey: .formula)
        try c.encode(family.rawValue, forKey: .family)
        try c.encode(link.rawValue, forKey: .link)
        try c.encode(response, forKey: .response)
        try c.encode(fixed, forKey: .fixed)
        try c.encode(terms, forKey: .terms)
        try c.encodeIfPresent(weights, forKey: .weights)
        try c.encodeIfPresent(offset, forKey: .offset)
        try c.encodeIfPresent(filter, forKey: .filter)
        if !alsoRequired.isEmpty { try c.encode(alsoRequired, forKey: .alsoRequired) }
        try c.encodeIfPresent(cluster, forKey: .cluster)
        try c.encodeIfPresent(gee, forKey: .gee)
    }
}

extension KeyedDecodingContainer {
    /// A Math enum from its raw string: Math types carry no Codable, so the
    /// protocol reads their wire spelling here and names the allowed values.
    func decodeRaw<T: RawRepresentable & CaseIterable>(_ type: T.Type, forKey key: Key) throws -> T where T.RawValue == String {
        let s = try decode(String.self, forKey: key)
        guard let v = T(rawValue: s) else {
            throw DecodingError.dataCorruptedError(forKey: key, in: self,
                debugDescription: "must be one of " + T.allCases.map(\.rawValue).joined(separator: ", "))
        }
        return v
    }
}
