/// Problems with what a peer sent. Messages name the field, never a value.
public enum ProtocolError: Error, Equatable, CustomStringConvertible {
    case invalidJSON(String)
    case invalidMessage(String)
    /// A message that decodes but whose parts do not fit together (lengths,
    /// counts, ranges): refused before any of it is used.
    case inconsistent(field: String, reason: String)
    case unknownType(String)
    case unknownReplyType(String)
    case wrongFieldType(field: String, expected: String)
    case missingField(String)
    case versionMismatch(ours: Int, theirs: Int)
    case unexpected(String)

    public var code: ErrorCode {
        switch self {
        case .invalidJSON: return .invalidJSON
        case .invalidMessage, .inconsistent: return .invalidMessage
        case .unknownType, .unknownReplyType: return .unknownType
        case .wrongFieldType: return .wrongFieldType
        case .missingField: return .missingField
        case .versionMismatch: return .versionMismatch
        case .unexpected: return .unexpectedMessage
        }
    }

    public var description: String {
        switch self {
        case .invalidJSON(let why): return "the line is not valid JSON (\(why))"
        case .invalidMessage(let why): return "invalid message: \(why)"
        case .inconsistent(let f, let why): return "invalid message: field \"\(f)\" \(why)"
        case .unknownType(let t): return "unknown message type \"\(t)\"; expected describe, prepare, evaluate, finalize, ping or batch"
        case .unknownReplyType(let t): return "unknown answer type \"\(t)\"; expected described, prepared, contribution, glmm_contribution, glm_step, gee_step, glmm_crossed, finalized, pong, error or batched"
        case .wrongFieldType(let f, let e): return "field \"\(f)\" has the wrong type: expected \(e)"
        case .missingField(let f): return "field \"\(f)\" is missing"
        case .versionMismatch(let o, let t):
            return "protocol version mismatch: this side speaks version \(o), the peer \(t); upgrade the older side"
        case .unexpected(let why): return "unexpected message: \(why)"
        }
    }
}
