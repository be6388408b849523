// How the agent answers a batch (Protocol/BatchMessages.swift): its
// sub-request lines one after another, each exactly as if it had arrived
// alone (the same decoding, rules, session state, limits and, over TLS, its
// own audit entries and receipt), so that batching changes the number of
// rounds and nothing else.

import Foundation
import Protocol

extension SiteService {
    /// The answers to a batch's sub-request lines, in order; `answer` answers
    /// one line (nil: the peer left, and the batch is abandoned).
    ///
    /// Once the answers so far plus the largest one so far would pass
    /// `maxBytes`, the remaining sub-requests are not worked on: each gets a
    /// `batch_not_answered` error and the coordinator sends it again in a
    /// later line. Why: the batched line must stay within what the peer
    /// reads, and a sub-request that was not processed can be resent
    /// without changing anything at the site.
    static func answerBatch(_ lines: [String], maxBytes: Int, answer: (String) throws -> String?) rethrows -> [String]? {
        var answers: [String] = []
        var bytes = 0, largest = 0
        for line in lines {
            if !answers.isEmpty && bytes + largest > maxBytes {
                answers.append(notAnswered(line, after: answers.count, bytes: bytes))
                continue
            }
            guard let a = try answer(line) else { return nil }
            bytes += a.utf8.count + 8
            largest = max(largest, a.utf8.count + 8)
            answers.append(a)
        }
        return answers
    }

    /// The error answer of a sub-request left for a later batch.
    static func notAnswered(_ line: String, after answered: Int, bytes: Int) -> String {
        let e = ErrorReply(code: .batchNotAnswered, fatal: false,
                           message: "not answered in this batch: the \(answered) answers before it already hold \(bytes) bytes, near this site's limit for one answer line (limits.max_answer_bytes); send it again")
        return (try? LineCodec.encode(Reply.error(e), id: LineCodec.peekID(line) ?? 0)) ?? "{}"
    }

    /// Largest batched answer line the agent builds: half its answer limit,
    /// so that one more answer of the largest size so far still fits.
    var batchAnswerBudget: Int { limits.maxAnswerBytes / 2 }

    /// A batch received in process (no audit log): each line through `handle(line:)`.
    func answerInProcess(_ batch: BatchRequest, peer: PeerIdentity, isCancelled: @Sendable () -> Bool) -> Reply? {
        guard let answers = Self.answerBatch(batch.requests, maxBytes: batchAnswerBudget, answer: { line in
            handle(line: line, peer: peer, isCancelled: isCancelled)
        }) else { return nil }
        return .batched(BatchReply(answers: answers))
    }
}
