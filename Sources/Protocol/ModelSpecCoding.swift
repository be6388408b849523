// JSON form of the model specification. Hand-written so that the wire format
// is small, readable in the audit log, and independent of Swift's synthesized
// enum encodings.

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
    private enum Key: String, CodingKey { case kind, variables }
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: Key.self)
        switch try c.decode(String.self, forKey: .kind) {
        case "site": self = .site
        case "within_site": self = .withinSite(try c.decode([String].self, forKey: .variables))
        default:
            throw DecodingError.dataCorruptedError(forKey: .kind, in: c,
                debugDescription: "grouping kind must be \"site\" or \"within_site\"")
        }
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        switch self {
        case .site: try c.encode("site", forKey: .kind)
        case .withinSite(let vs): try c.encode("within_site", forKey: .kind); try c.encode(vs, forKey: .variables)
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
