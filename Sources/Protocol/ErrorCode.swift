/// Why a request or a connection failed, as both sides name it.
///
/// On the wire it is the snake_case string (`"disclosure_refused"`). A code
/// this build does not know decodes to `.other` with the peer's string, so a
/// newer agent's new code never breaks an older coordinator; equality and
/// hashing go by the string, so `.other("timeout") == .timeout`.
public enum ErrorCode: Sendable, Hashable, Codable, RawRepresentable, ExpressibleByStringLiteral, CustomStringConvertible {
    // A line or message that is not a valid request or answer.
    case invalidJSON, invalidMessage, unknownType, wrongFieldType, missingField, versionMismatch, unexpectedMessage
    // The agent's connection handling.
    case expectedHello, lineTooLong, invalidUTF8, tooManyConnections, answerTooLarge
    // A request the site refused or could not answer.
    case unknownDataset, unknownSession, datasetError, sessionConflict, disclosureRefused, invalidRequest
    case `internal`, glmmFailed, numerical
    // The model on the site's rows.
    case unknownVariable, wrongVariableType, nonFiniteValue, siteColumnMismatch, noCompleteRows, unsupported
    // Found by the coordinator: transport, or an answer no rows could give.
    case connectFailed, tlsRefused, connectionLost, timeout, transportError, changedAfterRestart, inconsistentAnswer
    /// A code this build does not know, kept as the peer sent it.
    case other(String)

    /// Every code this build names (all but `.other`).
    public static let known: [ErrorCode] = [
        .invalidJSON, .invalidMessage, .unknownType, .wrongFieldType, .missingField, .versionMismatch, .unexpectedMessage,
        .expectedHello, .lineTooLong, .invalidUTF8, .tooManyConnections, .answerTooLarge,
        .unknownDataset, .unknownSession, .datasetError, .sessionConflict, .disclosureRefused, .invalidRequest,
        .internal, .glmmFailed, .numerical,
        .unknownVariable, .wrongVariableType, .nonFiniteValue, .siteColumnMismatch, .noCompleteRows, .unsupported,
        .connectFailed, .tlsRefused, .connectionLost, .timeout, .transportError, .changedAfterRestart, .inconsistentAnswer,
    ]
    private static let byRawValue: [String: ErrorCode] =
        Dictionary(uniqueKeysWithValues: known.map { ($0.rawValue, $0) })

    /// Never fails: an unknown string becomes `.other`.
    public init(rawValue: String) { self = Self.byRawValue[rawValue] ?? .other(rawValue) }
    /// Literals are the wire spelling, so `code == "timeout"` reads as the wire does.
    public init(stringLiteral value: String) { self.init(rawValue: value) }

    public var rawValue: String {
        switch self {
        case .invalidJSON: return "invalid_json"
        case .invalidMessage: return "invalid_message"
        case .unknownType: return "unknown_type"
        case .wrongFieldType: return "wrong_field_type"
        case .missingField: return "missing_field"
        case .versionMismatch: return "version_mismatch"
        case .unexpectedMessage: return "unexpected_message"
        case .expectedHello: return "expected_hello"
        case .lineTooLong: return "line_too_long"
        case .invalidUTF8: return "invalid_utf8"
        case .tooManyConnections: return "too_many_connections"
        case .answerTooLarge: return "answer_too_large"
        case .unknownDataset: return "unknown_dataset"
        case .unknownSession: return "unknown_session"
        case .datasetError: return "dataset_error"
        case .sessionConflict: return "session_conflict"
        case .disclosureRefused: return "disclosure_refused"
        case .invalidRequest: return "invalid_request"
        case .internal: return "internal"
        case .glmmFailed: return "glmm_failed"
        case .numerical: return "numerical"
        case .unknownVariable: return "unknown_variable"
        case .wrongVariableType: return "wrong_variable_type"
        case .nonFiniteValue: return "non_finite_value"
        case .siteColumnMismatch: return "site_column_mismatch"
        case .noCompleteRows: return "no_complete_rows"
        case .unsupported: return "unsupported"
        case .connectFailed: return "connect_failed"
        case .tlsRefused: return "tls_refused"
        case .connectionLost: return "connection_lost"
        case .timeout: return "timeout"
        case .transportError: return "transport_error"
        case .changedAfterRestart: return "changed_after_restart"
        case .inconsistentAnswer: return "inconsistent_answer"
        case .other(let s): return s
        }
    }

    public var description: String { rawValue }

    public static func == (a: ErrorCode, b: ErrorCode) -> Bool { a.rawValue == b.rawValue }
    public func hash(into h: inout Hasher) { h.combine(rawValue) }

    public init(from decoder: Decoder) throws {
        self.init(rawValue: try decoder.singleValueContainer().decode(String.self))
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }
}
