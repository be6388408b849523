// Encoding and decoding of protocol lines. Numbers are written in their
// shortest round-trip form, so every double reads back bit for bit;
// non-finite numbers cannot be sent.

import Foundation

public enum LineCodec {
    private struct Header: Decodable { var id: Int?; var type: String }

    private struct Envelope<Body: Encodable>: Encodable {
        var id: Int
        var type: String
        var body: Body?
        enum Key: String, CodingKey { case id, type }
        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: Key.self)
            try c.encode(id, forKey: .id)
            try c.encode(type, forKey: .type)
            try body?.encode(to: encoder)
        }
    }
    private struct Empty: Codable {}

    static func makeEncoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }

    static func string(_ data: Data) -> String { String(decoding: data, as: UTF8.self) }

    static func encode<B: Encodable>(id: Int, type: String, body: B?) throws -> String {
        do { return string(try makeEncoder().encode(Envelope(id: id, type: type, body: body))) }
        catch let EncodingError.invalidValue(_, ctx) {
            throw ProtocolError.invalidMessage("cannot send a non-finite number (field \(path(ctx.codingPath)))")
        }
    }

    public static func encode(_ hello: Hello) throws -> String { string(try makeEncoder().encode(hello)) }

    public static func decodeHello(_ line: String) throws -> Hello {
        let h: Hello = try decode(Hello.self, line)
        guard h.type == "hello" else { throw ProtocolError.unexpected("expected a hello first") }
        return h
    }

    public static func encode(_ request: Request, id: Int) throws -> String {
        switch request {
        case .describe(let b): return try encode(id: id, type: request.typeName, body: b)
        case .prepare(let b): return try encode(id: id, type: request.typeName, body: b)
        case .evaluate(let b): return try encode(id: id, type: request.typeName, body: b)
        case .finalize(let b): return try encode(id: id, type: request.typeName, body: b)
        case .ping: return try encode(id: id, type: request.typeName, body: Empty?.none)
        case .batch(let b): return try encode(id: id, type: request.typeName, body: b)
        }
    }

    public static func encode(_ reply: Reply, id: Int) throws -> String {
        switch reply {
        case .described(let b): return try encode(id: id, type: reply.typeName, body: b)
        case .prepared(let b): return try encode(id: id, type: reply.typeName, body: b)
        case .contribution(let b): return try encode(id: id, type: reply.typeName, body: b)
        case .glmmContribution(let b): return try encode(id: id, type: reply.typeName, body: b)
        case .glmStep(let b): return try encode(id: id, type: reply.typeName, body: b)
        case .geeStep(let b): return try encode(id: id, type: reply.typeName, body: b)
        case .glmmCrossed(let b): return try encode(id: id, type: reply.typeName, body: b)
        case .lowRankContribution(let b): return try encode(id: id, type: reply.typeName, body: b)
        case .finalized(let b): return try encode(id: id, type: reply.typeName, body: b)
        case .pong: return try encode(id: id, type: reply.typeName, body: Empty?.none)
        case .error(let b): return try encode(id: id, type: reply.typeName, body: b)
        case .batched(let b): return try encode(id: id, type: reply.typeName, body: b)
        }
    }

    /// Decodes a request line. Errors carry the request id when it could be read.
    public static func decodeRequest(_ line: String) throws -> (id: Int, request: Request) {
        let h = try decode(Header.self, line)
        guard let id = h.id else { throw ProtocolError.missingField("id") }
        switch h.type {
        case "describe": return (id, .describe(try decode(DescribeRequest.self, line)))
        case "prepare": return (id, .prepare(try decode(PrepareRequest.self, line)))
        case "evaluate": return (id, .evaluate(try decode(EvaluateRequest.self, line)))
        case "finalize": return (id, .finalize(try decode(FinalizeRequest.self, line)))
        case "ping": return (id, .ping)
        case "batch": return (id, .batch(try decode(BatchRequest.self, line)))
        default: throw ProtocolError.unknownType(String(h.type.prefix(40)))
        }
    }

    /// The id of a line, if it has one (to address an error answer).
    public static func peekID(_ line: String) -> Int? { try? decode(Header.self, line).id }

    /// The type of a line with an id, if it has both (to route a batch before decoding it).
    public static func peekType(_ line: String) -> String? {
        guard let h = try? decode(Header.self, line), h.id != nil else { return nil }
        return h.type
    }

    public static func decodeReply(_ line: String) throws -> (id: Int, reply: Reply) {
        let h = try decode(Header.self, line)
        guard let id = h.id else { throw ProtocolError.missingField("id") }
        switch h.type {
        case "described": return (id, .described(try decode(SiteDescription.self, line)))
        case "prepared": return (id, .prepared(try decode(PrepareReply.self, line)))
        case "contribution": return (id, .contribution(try decode(ContributionReply.self, line)))
        case "glmm_contribution": return (id, .glmmContribution(try decode(GLMMContributionReply.self, line)))
        case "glm_step": return (id, .glmStep(try decode(GLMStepReply.self, line)))
        case "gee_step": return (id, .geeStep(try decode(GEEStepReply.self, line)))
        case "glmm_crossed": return (id, .glmmCrossed(try decode(CrossedGLMMReply.self, line)))
        case "low_rank_contribution": return (id, .lowRankContribution(try decode(LowRankContributionReply.self, line)))
        case "finalized": return (id, .finalized(try decode(FinalizeReply.self, line)))
        case "pong": return (id, .pong)
        case "error": return (id, .error(try decode(ErrorReply.self, line)))
        case "batched": return (id, .batched(try decode(BatchReply.self, line)))
        default: throw ProtocolError.unknownReplyType(String(h.type.prefix(40)))
        }
    }

    static func decode<T: Decodable>(_ type: T.Type, _ line: String) throws -> T {
        guard line.utf8.first(where: { $0 != 0x20 && $0 != 0x09 }) == UInt8(ascii: "{") else {
            throw ProtocolError.invalidJSON("a protocol line must be one JSON object, {...}")
        }
        do {
            return try JSONDecoder().decode(T.self, from: Data(line.utf8))
        } catch let DecodingError.typeMismatch(t, ctx) {
            throw ProtocolError.wrongFieldType(field: path(ctx.codingPath), expected: expectedName(t))
        } catch let DecodingError.valueNotFound(t, ctx) {
            throw ProtocolError.wrongFieldType(field: path(ctx.codingPath), expected: expectedName(t))
        } catch let DecodingError.keyNotFound(k, ctx) {
            throw ProtocolError.missingField(path(ctx.codingPath + [k]))
        } catch let DecodingError.dataCorrupted(ctx) {
            if ctx.codingPath.isEmpty { throw ProtocolError.invalidJSON("the line is not a complete JSON object") }
            throw ProtocolError.invalidMessage("field \"\(path(ctx.codingPath))\": \(ctx.debugDescription)")
        }
    }

    static func path(_ keys: [CodingKey]) -> String {
        keys.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }
            .reduce("") { acc, k in k.hasPrefix("[") ? acc + k : (acc.isEmpty ? k : acc + "." + k) }
    }

    static func expectedName(_ t: Any.Type) -> String {
        switch t {
        case is Double.Type: return "a number"
        case is Int.Type: return "an integer"
        case is String.Type: return "a string"
        case is Bool.Type: return "true or false"
        default:
            let n = String(describing: t)
            if n.hasPrefix("Array") { return "an array" }
            if n.hasPrefix("Dictionary") { return "an object" }
            return "an object"
        }
    }
}
