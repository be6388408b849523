// The wire form of a batch: several describe, prepare, evaluate or finalize requests
// sent as one line and answered as one line, so that the M analyses of a
// multiple imputation share rounds (Coordinator/RoundBatcher.swift). Each
// sub-request is a complete protocol line, exactly as it would be sent
// alone; each sub-answer is the line the agent would have sent alone (with
// its own receipt), so a batch reveals nothing beyond its sub-requests'
// answers and the audit log holds the same entries as without batching
// (docs/PRIVACY.md, "Batches").

/// Several requests answered in order (`"type":"batch"`).
public struct BatchRequest: Codable, Sendable, Equatable {
    /// The sub-requests' protocol lines, in the order they are answered.
    public var requests: [String]
    enum CodingKeys: String, CodingKey { case requests }
    public init(requests: [String]) { self.requests = requests }

    /// Types a batch may carry: the rounds of an analysis (describe, and a
    /// fit session's prepare, evaluate and finalize). ping is answered
    /// alone; a batch inside a batch is refused.
    public static let batchableTypes: Set<String> = ["describe", "prepare", "evaluate", "finalize"]

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        requests = try c.decode([String].self, forKey: .requests)
        let field = LineCodec.path(decoder.codingPath + [CodingKeys.requests])
        guard !requests.isEmpty else { throw ProtocolError.inconsistent(field: field, reason: "is empty; a batch carries 1 to \(ProtocolLimits.maxBatchRequests) requests") }
        guard requests.count <= ProtocolLimits.maxBatchRequests else {
            throw ProtocolError.inconsistent(field: field, reason: "holds \(requests.count) requests; a batch carries at most \(ProtocolLimits.maxBatchRequests) (send the rest in another batch)")
        }
        for (k, line) in requests.enumerated() {
            guard let type = LineCodec.peekType(line) else {
                throw ProtocolError.inconsistent(field: "\(field)[\(k)]", reason: "is not a protocol line (a JSON object with id and type)")
            }
            if type == "batch" { throw ProtocolError.inconsistent(field: "\(field)[\(k)]", reason: "is a batch; batches cannot be nested") }
            guard Self.batchableTypes.contains(type) else {
                let shown = type.count <= 40 && type.allSatisfy({ $0.isLetter || $0 == "_" }) ? "\"\(type)\"" : "of an unknown type"
                throw ProtocolError.inconsistent(field: "\(field)[\(k)]", reason: "is a request \(shown); only describe, prepare, evaluate and finalize may be batched")
            }
        }
    }
}

/// The answers to a batch, one per sub-request in its order (`"type":"batched"`).
/// A sub-request that was refused has its own error answer; the others answer as usual.
public struct BatchReply: Codable, Sendable, Equatable {
    public var answers: [String]
    enum CodingKeys: String, CodingKey { case answers }
    public init(answers: [String]) { self.answers = answers }
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        answers = try c.decode([String].self, forKey: .answers)
        guard (1...ProtocolLimits.maxBatchRequests).contains(answers.count) else {
            throw ProtocolError.inconsistent(field: LineCodec.path(decoder.codingPath + [CodingKeys.answers]),
                                             reason: "must hold 1 to \(ProtocolLimits.maxBatchRequests) answers")
        }
    }
}

extension ErrorCode {
    /// A sub-request the agent did not work on because the batch's answer
    /// had reached the site's answer size limit: send it again (it was
    /// neither processed nor logged as answered).
    public static let batchNotAnswered: ErrorCode = "batch_not_answered"
}

extension ProtocolLimits {
    /// Most sub-requests in one batch (the largest number of completed
    /// datasets a coordinator batches per line; more go in further lines).
    public static let maxBatchRequests = 100
}
