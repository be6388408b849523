import XCTest
@testable import Math

/// The jet kernels written out for one, two and three parameters
/// (OneParameterJet, TwoParameterJet, ThreeParameterJet) claim JetKernel's
/// numbers to the bit: the same expressions in the same order. Checked on
/// random jets, for each operation, out of place and in place where the
/// kernels allow it (sqrt into its argument, divide into its numerator).
final class WrittenOutJetKernelTests: XCTestCase {
    private func check<K: JetArithmetic>(_ kernel: K, parameters n: Int, _ name: String) {
        let space = JetSpace(parameters: n, order: 2)
        let general = JetKernel(space)
        let w = space.width
        var rng = SeededGenerator(seed: 31)
        func jet(positive: Bool = false) -> [Double] {
            var v = (0..<w).map { _ in Double.random(in: -2...2, using: &rng) }
            if positive { v[0] = Double.random(in: 0.1...5, using: &rng) }
            return v
        }
        func same(_ a: [Double], _ b: [Double], _ what: String) {
            XCTAssertEqual(a.map(\.bitPattern), b.map(\.bitPattern), "\(name) \(what)")
        }
        for _ in 0..<2_000 {
            let a = jet(positive: true), b = jet(positive: true), c0 = jet()
            let sign = Bool.random(using: &rng) ? 1.0 : -1.0
            var x = c0, y = c0
            kernel.mulAdd(&x, a, b, sign); general.mulAdd(&y, a, b, sign)
            same(x, y, "mulAdd")
            x = c0; y = c0
            kernel.sqrt(&x, a); general.sqrt(&y, a)
            same(x, y, "sqrt")
            x = a; y = a
            x.withUnsafeMutableBufferPointer { p in kernel.sqrt(p.baseAddress!, p.baseAddress!) }
            y.withUnsafeMutableBufferPointer { p in general.sqrt(p.baseAddress!, p.baseAddress!) }
            same(x, y, "sqrt in place")
            x = c0; y = c0
            kernel.divide(&x, a, b); general.divide(&y, a, b)
            same(x, y, "divide")
            x = a; y = a
            x.withUnsafeMutableBufferPointer { p in kernel.divide(p.baseAddress!, p.baseAddress!, b) }
            y.withUnsafeMutableBufferPointer { p in general.divide(p.baseAddress!, p.baseAddress!, b) }
            same(x, y, "divide in place")
            x = c0; y = c0
            kernel.logAdd(&x, a, sign); general.logAdd(&y, a, sign)
            same(x, y, "logAdd")
        }
    }

    func testWrittenOutKernelsAreJetKernelsNumbers() {
        check(OneParameterJet(), parameters: 1, "one parameter")
        check(TwoParameterJet(JetKernel(JetSpace(parameters: 2, order: 2))), parameters: 2, "two parameters")
        check(ThreeParameterJet(), parameters: 3, "three parameters")
    }
}
