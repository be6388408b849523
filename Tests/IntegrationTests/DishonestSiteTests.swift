import Foundation
import XCTest
import Coordinator
import Protocol
import SiteAgent
import Math

/// Issue part 5: answers that no rows could produce fail the fit naming the
/// site; text a site sends reaches the terminal without control characters.
final class DishonestSiteTests: XCTestCase {
    /// Forwards to an honest channel and alters its answers.
    final class TamperingChannel: SiteChannel, @unchecked Sendable {
        let inner: SiteChannel
        let tamper: (Reply) -> Reply
        init(_ inner: SiteChannel, _ tamper: @escaping (Reply) -> Reply) { self.inner = inner; self.tamper = tamper }
        var site: String { inner.site }
        func call(_ request: Request) throws -> Reply { tamper(try inner.call(request)) }
        var bytesSent: Int { inner.bytesSent }
        var bytesReceived: Int { inner.bytesReceived }
        func close() {}
    }

    /// sleepstudy's sites in process, "north" altered by `tamper`.
    func fitError(_ formula: String, _ tamper: @escaping (Reply) -> Reply) throws -> SiteFailure? {
        let honest = inProcessFederation(files: try Fixtures.siteFiles("sleepstudy"), siteColumn: nil)
        let federation = Federation(channels: honest.channels.map { $0.site == "north" ? TamperingChannel($0, tamper) : $0 })
        let error = thrownError({ try Analysis.fit(federation, dataset: "data", formula: formula) })
        guard let f = error as? SiteFailure else { XCTFail("expected a SiteFailure, got \(String(describing: error))"); return nil }
        XCTAssertEqual(f.site, "north")
        XCTAssertEqual(f.code, "inconsistent_answer", f.description)
        return f
    }

    func changeBlocks(_ change: @escaping (inout SiteBlocks) -> Void) -> (Reply) -> Reply {
        { reply in
            guard case .prepared(var p) = reply, var b = p.blocks else { return reply }
            change(&b)
            p.blocks = b
            return .prepared(p)
        }
    }

    func testSiteGroupedSumsThatNoRowsCouldGiveAreRefused() throws {
        let formula = "Reaction ~ Days + (1 | site)"
        // The intercept column's sum of squares is the number of rows used.
        let count = try fitError(formula, changeBlocks { $0.ww[0] += 1 })
        XCTAssertTrue(count?.message.contains("the intercept column's sum of squares is 61, not the 60 rows used") == true, "\(String(describing: count))")
        // A cross-product larger than its sums of squares allow.
        let w = 3
        let cauchy = try fitError(formula, changeBlocks { $0.ww[1 * w + 2] *= 1e3; $0.ww[2 * w + 1] *= 1e3 })
        XCTAssertTrue(cauchy?.message.contains("an off-diagonal entry of [X y]ᵀ[X y] exceeds what its diagonal allows") == true, "\(String(describing: cauchy))")
        // A negative sum of squares.
        let negative = try fitError(formula, changeBlocks { $0.ww[w * w - 1] = -1 })
        XCTAssertTrue(negative?.message.contains("a diagonal entry of [X y]ᵀ[X y] is negative") == true, "\(String(describing: negative))")
        // Sums over another number of rows than reported.
        let rows = try fitError(formula, changeBlocks { $0.rows -= 1 })
        XCTAssertTrue(rows?.message.contains("sums over 59 rows, but 60 rows used") == true, "\(String(describing: rows))")
        print("dishonest sums: \(count?.description ?? "")")
    }

    func testEvaluationsThatNoRowsCouldGiveAreRefused() throws {
        let logDet = try fitError("Reaction ~ Days + (Days | Subject)") { reply in
            guard case .contribution(var c) = reply else { return reply }
            c.logDet[0] = -5
            return .contribution(c)
        }
        XCTAssertTrue(logDet?.message.contains("log|L|² = -5 is negative") == true, "\(String(describing: logDet))")
        let schur = try fitError("Reaction ~ Days + (Days | Subject)") { reply in
            guard case .contribution(var c) = reply, let part = try? c.contribution() else { return reply }
            var s = part.schur
            s.storage[s.offset(0, 0)] = -abs(s.value(0, 0)) - 1
            c = ContributionReply(session: c.session, contribution: LMMContribution(schur: s, logDet: part.logDet, rows: part.rows))
            return .contribution(c)
        }
        XCTAssertTrue(schur?.message.contains("a diagonal entry of its Schur complement is negative") == true, "\(String(describing: schur))")
    }

    /// An agent's error text with ANSI escapes (clear screen, colours, a
    /// title change) and control characters reaches the analyst without them.
    func testControlCharactersAndEscapesFromASiteAreStripped() throws {
        let hostile = "\u{1B}[2J\u{1B}[31mall good\u{1B}[0m\u{1B}]0;owned\u{07}\r\nfit converged\u{08}\u{202E}"
        let channel = InProcessChannel(site: "north") { line in
            let id = (try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["id"] as? Int ?? 0
            return (try? LineCodec.encode(Reply.error(ErrorReply(code: "disclosure_refused\u{1B}[1m", fatal: false, message: hostile)), id: id)) ?? ""
        }
        let error = thrownError({ try Analysis.describe(Federation(channels: [channel]), dataset: "data") })
        let f = try XCTUnwrap(error as? SiteFailure)
        XCTAssertEqual(f.message, "all good  fit converged")
        XCTAssertEqual(f.code, "disclosure_refused")
        for text in [f.description, "\(SiteFailures(failures: [f, f], request: "describe", round: 1))"] {
            XCTAssertFalse(text.unicodeScalars.contains { $0.value < 0x20 && $0 != "\n" || $0.value == 0x7F || $0.value == 0x202E }, text)
        }
        XCTAssertEqual(TerminalText.clean("ok\u{1B}[38;5;196mred\u{1B}(B\u{9B}x"), "okredx")
    }
}
