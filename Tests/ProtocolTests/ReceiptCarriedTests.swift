// Finding the receipt an answer line carries as its last key (Receipt.carried).

import Foundation
import XCTest
@testable import Protocol

final class ReceiptCarriedTests: XCTestCase {
    private let receipt = Receipt(site: "north", seq: 42, hash: String(repeating: "ab", count: 32),
                                  certificate: String(repeating: "cd", count: 32), signature: "c2lnbmF0dXJl")

    func testTheLastKeysReceiptIsFoundInShortAndLongLines() throws {
        for line in [#"{"id":1,"type":"pong"}"#, "{}",
                     #"{"id":2,"type":"contribution","values":["# + String(repeating: "1.2345678901234567,", count: 2_000) + "0]}"] {
            XCTAssertNil(Receipt.carried(by: line), "no receipt in \(line.prefix(40))")
            let withReceipt = try receipt.appended(to: line)
            XCTAssertEqual(Receipt.carried(by: withReceipt), receipt, "\(line.prefix(40))")
        }
    }

    func testOnlyATrailingReceiptCounts() {
        // A "receipt" key that is not the last one, or one further back than the scanned tail, is not the line's.
        XCTAssertNil(Receipt.carried(by: #"{"receipt":{"site":"x"},"id":1}"#))
        XCTAssertNil(Receipt.carried(by: #"{"note":"\"receipt\":{","id":1}"#))
        XCTAssertNil(Receipt.carried(by: "{\"receipt\":{}," + String(repeating: " ", count: 5_000) + "}"))
        XCTAssertNil(Receipt.carried(by: "}"))
        XCTAssertNil(Receipt.carried(by: ""))
    }
}
