// `fedmix bench --codec`: the protocol codec alone, in µs per message, on the
// messages a fit exchanges most (BENCHMARKS.md "Per-round latency over
// agents"): an evaluate request, an ohio-shaped GLMM answer (θ and β: 5
// parameters, order 2) and an egsingle-shaped LMM contribution answer (a 3×3
// Schur complement of jets in 6 parameters, order 2). Why on its own: in a fit
// the codec is a few percent of samples among many, so a change to it is
// easier to see here, on a quiet measure, than in a fit's wall time.

import Foundation
import Coordinator
import Math
import Protocol

enum BenchCodec {
    struct Case {
        var name: String
        var line: String
        var encode: () throws -> String
        var decode: (String) throws -> Void
    }

    /// Doubles with full-precision shortest forms (16–17 digits), of the
    /// magnitudes a fit sends, from a fixed seed.
    static func values(_ n: Int, seed: UInt64) -> [Double] {
        var g = SeededRandom(seed: seed)
        return (0..<n).map { _ in
            let u = Double(g.next() >> 11) / Double(1 << 53)
            let scale = [1e-6, 1e-3, 1.0, 1e2, 1e4][Int(g.next() % 5)]
            return (u - 0.3) * scale
        }
    }

    static func cases() throws -> [Case] {
        let request = Request.evaluate(EvaluateRequest(session: "6F1C2A9E-3B4D-4E5F-8A7B-9C0D1E2F3A4B", theta: values(1, seed: 1),
                                                       order: 2, beta: values(4, seed: 2), nAGQ: 12))
        var objective = ScalarJet(space: JetSpace(parameters: 5, order: 2))
        objective.storage = values(objective.storage.count, seed: 3)
        let glmm = Reply.glmmContribution(GLMMContributionReply(session: "6F1C2A9E-3B4D-4E5F-8A7B-9C0D1E2F3A4B", rows: 4, objective: objective))
        let space = JetSpace(parameters: 6, order: 2)
        var schur = JetMatrix(rows: 3, cols: 3, space: space)
        schur.storage = values(schur.storage.count, seed: 4)
        var logDet = ScalarJet(space: space)
        logDet.storage = values(logDet.storage.count, seed: 5)
        let lmm = Reply.contribution(ContributionReply(session: "6F1C2A9E-3B4D-4E5F-8A7B-9C0D1E2F3A4B",
                                                       contribution: LMMContribution(schur: schur, logDet: logDet, rows: 120)))
        return [
            Case(name: "evaluate request", line: try LineCodec.encode(request, id: 7),
                 encode: { try LineCodec.encode(request, id: 7) }, decode: { _ = try LineCodec.readRequest($0).request.get() }),
            Case(name: "glmm_contribution answer", line: try LineCodec.encode(glmm, id: 7),
                 encode: { try LineCodec.encode(glmm, id: 7) }, decode: { _ = try LineCodec.decodeReply($0) }),
            Case(name: "contribution answer", line: try LineCodec.encode(lmm, id: 7),
                 encode: { try LineCodec.encode(lmm, id: 7) }, decode: { _ = try LineCodec.decodeReply($0) }),
        ]
    }

    /// Prints µs per encode and per decode of each case (the median of 7
    /// timings of about 30 ms each, so a debug build also finishes in a
    /// second or two) and the line's bytes.
    static func run() throws {
        print("fedmix bench --codec: µs per message (median of 7 timings of about 30 ms each)")
        print("message".padding(toLength: 26, withPad: " ", startingAt: 0) + "  bytes   encode µs   decode µs")
        for c in try cases() {
            func median(_ body: () throws -> Void) rethrows -> Double {
                let t0 = DispatchTime.now().uptimeNanoseconds
                try body()
                let once = max(1, DispatchTime.now().uptimeNanoseconds - t0)
                let repeats = max(3, min(20_000, Int(30_000_000 / once)))
                var t: [Double] = []
                for _ in 0..<7 {
                    let t0 = DispatchTime.now().uptimeNanoseconds
                    for _ in 0..<repeats { try body() }
                    t.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1000 / Double(repeats))
                }
                return t.sorted()[3]
            }
            let e = try median { _ = try c.encode() }
            let d = try median { try c.decode(c.line) }
            print(c.name.padding(toLength: 26, withPad: " ", startingAt: 0)
                  + String(format: "%7d  %10.2f  %10.2f", c.line.utf8.count, e, d))
        }
    }
}
