// Encoding and decoding of protocol lines. Numbers are written in their
// shortest round-trip form, so every double reads back bit for bit;
// non-finite numbers cannot be sent.

import Foundation

public enum LineCodec {
    private struct Header: Decodable, Equatable { var id: Int?; var type: String }

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
        let envelope = Envelope(id: id, type: type, body: body)
        do {
            let line = try JSONLineWriter.encode(envelope)
            if checksCodec {
                let reference = string(try makeEncoder().encode(envelope))
                precondition(line == reference, "JSONLineWriter and JSONEncoder differ:\n\(line.prefix(2000))\n\(reference.prefix(2000))")
            }
            return line
        } catch let EncodingError.invalidValue(_, ctx) {
            throw ProtocolError.invalidMessage("cannot send a non-finite number (field \(path(ctx.codingPath)))")
        }
    }

    /// FEDMIX_CODEC_CHECK=1: every line is also written and read with
    /// Foundation's JSONEncoder/JSONDecoder, and a difference (bytes written,
    /// success, or the error's text) stops the process. The test suite runs
    /// once this way (JSONLineCodecTests explains).
    static let checksCodec = ProcessInfo.processInfo.environment["FEDMIX_CODEC_CHECK"] == "1"

    /// A line the direct writer made (DirectLineCoding.swift), or, when it
    /// made none, the Codable path's; under FEDMIX_CODEC_CHECK both, compared.
    static func encode<B: Encodable>(id: Int, type: String, body: B, direct: String?) throws -> String {
        guard let direct else { return try encode(id: id, type: type, body: body) }
        if checksCodec {
            let reference = try encode(id: id, type: type, body: body)
            precondition(direct == reference, "DirectLineWriter and JSONLineWriter differ:\n\(direct.prefix(2000))\n\(reference.prefix(2000))")
        }
        return direct
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
        case .evaluate(let b): return try encode(id: id, type: request.typeName, body: b, direct: DirectLineWriter.evaluate(b, id: id))
        case .finalize(let b): return try encode(id: id, type: request.typeName, body: b)
        case .ping: return try encode(id: id, type: request.typeName, body: Empty?.none)
        case .batch(let b): return try encode(id: id, type: request.typeName, body: b)
        }
    }

    public static func encode(_ reply: Reply, id: Int) throws -> String {
        switch reply {
        case .described(let b): return try encode(id: id, type: reply.typeName, body: b)
        case .prepared(let b): return try encode(id: id, type: reply.typeName, body: b)
        case .contribution(let b): return try encode(id: id, type: reply.typeName, body: b, direct: DirectLineWriter.contribution(b, id: id))
        case .glmmContribution(let b): return try encode(id: id, type: reply.typeName, body: b, direct: DirectLineWriter.glmmContribution(b, id: id))
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
        try decodeRequest(Parsed(line))
    }

    /// A request line read once (an agent routes, answers and addresses
    /// errors from one parse): the line's id when it has one, and the
    /// request or the error that refuses it.
    public static func readRequest(_ line: String) -> (id: Int?, request: Result<Request, any Error>) {
        let parsed: Parsed
        do { parsed = try Parsed(line) } catch { return (nil, .failure(error)) }
        let known = try? header(parsed)
        return (known?.id, Result { try decodeRequest(parsed, header: known).request })
    }

    /// `header`: the line's header when already read.
    private static func decodeRequest(_ line: Parsed, header known: Header? = nil) throws -> (id: Int, request: Request) {
        let h = try known ?? header(line)
        guard let id = h.id else { throw ProtocolError.missingField("id") }
        switch h.type {
        case "describe": return (id, .describe(try decode(DescribeRequest.self, line)))
        case "prepare": return (id, .prepare(try decode(PrepareRequest.self, line)))
        case "evaluate": return (id, .evaluate(try decode(EvaluateRequest.self, line, direct: DirectLineReader.evaluate)))
        case "finalize": return (id, .finalize(try decode(FinalizeRequest.self, line)))
        case "ping": return (id, .ping)
        case "batch": return (id, .batch(try decode(BatchRequest.self, line)))
        default: throw ProtocolError.unknownType(String(h.type.prefix(40)))
        }
    }

    /// The id of a line, if it has one (to address an error answer).
    public static func peekID(_ line: String) -> Int? { try? header(Parsed(line)).id }

    /// The type of a line with an id, if it has both (to route a batch before decoding it).
    public static func peekType(_ line: String) -> String? {
        guard let h = try? header(Parsed(line)), h.id != nil else { return nil }
        return h.type
    }

    public static func decodeReply(_ line: String) throws -> (id: Int, reply: Reply) {
        let line = try Parsed(line)
        let h = try header(line)
        guard let id = h.id else { throw ProtocolError.missingField("id") }
        switch h.type {
        case "described": return (id, .described(try decode(SiteDescription.self, line)))
        case "prepared": return (id, .prepared(try decode(PrepareReply.self, line)))
        case "contribution": return (id, .contribution(try decode(ContributionReply.self, line, direct: DirectLineReader.contribution)))
        case "glmm_contribution": return (id, .glmmContribution(try decode(GLMMContributionReply.self, line, direct: DirectLineReader.glmmContribution)))
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

    /// A line parsed once, decoded as its header and then as its body.
    struct Parsed {
        let text: String
        let document: JSONLineDocument
        init(_ line: String) throws {
            guard line.utf8.first(where: { $0 != 0x20 && $0 != 0x09 }) == UInt8(ascii: "{") else {
                throw ProtocolError.invalidJSON("a protocol line must be one JSON object, {...}")
            }
            text = line
            do { document = try JSONLineDocument(line) } catch let e as DecodingError { throw LineCodec.protocolError(e) }
        }
    }

    /// A line's id and type.
    private static func header(_ line: Parsed) throws -> Header {
        try decode(Header.self, line) { document in DirectLineReader.header(document).map { Header(id: $0.id, type: $0.type) } }
    }

    /// The value the direct reader found (DirectLineCoding.swift), or, when
    /// it found none, the Codable path's value or error; under
    /// FEDMIX_CODEC_CHECK both, compared.
    static func decode<T: Decodable & Equatable>(_ type: T.Type, _ line: Parsed, direct: (JSONLineDocument) -> T?) throws -> T {
        guard let value = direct(line.document) else { return try decode(type, line) }
        if checksCodec {
            let reference = try? decode(type, line)
            precondition(reference == value, "DirectLineReader and the Codable path differ on \(T.self):\n\(line.text.prefix(2000))")
        }
        return value
    }

    static func decode<T: Decodable>(_ type: T.Type, _ line: String) throws -> T {
        try decode(type, try Parsed(line))
    }

    static func decode<T: Decodable>(_ type: T.Type, _ line: Parsed) throws -> T {
        let result: Result<T, Error>
        do { result = .success(try JSONLineReader.decode(T.self, from: line.document)) }
        catch let e as DecodingError { result = .failure(protocolError(e)) }
        if checksCodec {
            let reference: Result<T, Error>
            do { reference = .success(try JSONDecoder().decode(T.self, from: Data(line.text.utf8))) }
            catch let e as DecodingError { reference = .failure(protocolError(e)) }
            switch (result, reference) {
            case (.success, .success): break
            case (.failure(let a), .failure(let b)) where "\(a)" == "\(b)": break
            // Stricter on invalid JSON (JSONLineCodecTests lists where).
            case (.failure(ProtocolError.invalidJSON), _): break
            default: preconditionFailure("JSONLineReader and JSONDecoder differ on \(T.self): \(result) vs \(reference)\n\(line.text.prefix(2000))")
            }
        }
        return try result.get()
    }

    /// Foundation's decoding errors as protocol errors naming the field.
    static func protocolError(_ error: DecodingError) -> ProtocolError {
        switch error {
        case .typeMismatch(let t, let ctx), .valueNotFound(let t, let ctx):
            return .wrongFieldType(field: path(ctx.codingPath), expected: expectedName(t))
        case .keyNotFound(let k, let ctx):
            return .missingField(path(ctx.codingPath + [k]))
        case .dataCorrupted(let ctx):
            if ctx.codingPath.isEmpty { return .invalidJSON("the line is not a complete JSON object") }
            return .invalidMessage("field \"\(path(ctx.codingPath))\": \(ctx.debugDescription)")
        @unknown default:
            return .invalidJSON("the line is not a complete JSON object")
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
