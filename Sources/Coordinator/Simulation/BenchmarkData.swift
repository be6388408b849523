// Synthetic multi-site data for `fedmix bench` (and for tests or commands
// that need large reproducible data): N rows over K sites, covariates
// x1, x2, x3 ~ N(0, 1), patients with about five rows each, and a response
// with true site intercepts and x1 slopes (correlated) and patient
// intercepts. Every site draws from its own SeededRandom stream, so a site's
// rows depend only on the seed, the site's index and its number of rows.

import Foundation
import Synchronization

public struct BenchmarkData: Sendable {
    /// The two benchmark models: a correlated random intercept and slope by
    /// site (every term grouped by site: one round), and random intercepts
    /// by site and by patient within site (one round per evaluation).
    public static let slopeFormula = "y ~ x1 + x2 + x3 + (1 + x1 | site)"
    public static let patientFormula = "y ~ x1 + x2 + x3 + (1 | site) + (1 | site:patient)"
    /// The GLMM benchmark: a binary outcome with a random intercept by site.
    public static let binaryFormula = "yb ~ x1 + x2 + x3 + (1 | site)"

    /// The parameters the data are simulated from.
    public struct Truth: Sendable, Equatable {
        /// (Intercept), x1, x2, x3.
        public var beta: [Double] = [10, 2, -1, 0.5]
        public var siteInterceptSD = 2.0
        public var siteSlopeSD = 0.5
        public var siteCorrelation = 0.3
        public var patientSD = 1.5
        public var sigma = 1.0
        /// Rows per patient are drawn uniformly from this range (mean 5).
        public var rowsPerPatient: ClosedRange<Int> = 3...7
        public init() {}
    }

    /// One site's rows, column by column.
    public struct Site: Sendable {
        public var name: String
        public var x1: [Double]
        public var x2: [Double]
        public var x3: [Double]
        /// Patient codes 1, 2, … local to the site (as `site:patient`).
        public var patient: [Double]
        public var y: [Double]
        /// Binary outcome: logit P(yb = 1) = −0.5 + 0.4 x1 − 0.3 x2 + 0.2 x3 + 0.5·(site intercept / its SD).
        public var yb: [Double] = []
        /// The site's true intercept and x1-slope deviations.
        public var siteEffects: (intercept: Double, slope: Double)
        public var patients: Int
        public var rows: Int { y.count }

        /// The columns in a fixed order: patient, x1, x2, x3, y.
        public var columns: [(name: String, values: [Double])] {
            [("patient", patient), ("x1", x1), ("x2", x2), ("x3", x3), ("y", y), ("yb", yb)]
        }

        /// The site's rows as CSV (with a `site` column), e.g. for lme4.
        public func csv(header: Bool = true) -> String {
            var out = header ? "site,patient,x1,x2,x3,y,yb\n" : ""
            out.reserveCapacity(rows * 80)
            for i in 0..<rows {
                out += "\(name),\(Int(patient[i])),\(x1[i]),\(x2[i]),\(x3[i]),\(y[i]),\(Int(yb[i]))\n"
            }
            return out
        }
    }

    public var truth: Truth
    public var sites: [Site]
    public var rows: Int { sites.reduce(0) { $0 + $1.rows } }

    /// Site names `site-01` … (zero-padded to the number of sites).
    public static func siteName(_ index: Int, of count: Int) -> String {
        let digits = String(max(count, 1)).count
        let n = String(index + 1)
        return "site-" + String(repeating: "0", count: max(0, max(2, digits) - n.count)) + n
    }

    /// `rows` rows split as evenly as possible over `sites` sites (the first
    /// `rows % sites` sites get one more). Sites are generated in parallel;
    /// the result does not depend on the thread count.
    public static func generate(rows: Int, sites: Int, seed: UInt64 = 20_260_101,
                                truth: Truth = Truth()) -> BenchmarkData {
        precondition(rows >= 0 && sites > 0, "rows must be ≥ 0 and sites > 0")
        let generated = FanOutPool.map(sites, width: ProcessInfo.processInfo.activeProcessorCount, name: "fedmix-generate",
                                       stackSize: nil) { k in
            generateSite(index: k, name: siteName(k, of: sites), rows: rows / sites + (k < rows % sites ? 1 : 0), seed: seed, truth: truth)
        }
        return BenchmarkData(truth: truth, sites: generated)
    }

    /// One site's rows, from the site's own random stream.
    public static func generateSite(index: Int, name: String, rows n: Int, seed: UInt64,
                                    truth: Truth = Truth()) -> Site {
        var rng = SeededRandom(seed: seed &+ UInt64(index) &* 0x9E37_79B9_7F4A_7C15)
        let z1 = rng.normal(), z2 = rng.normal()
        let rho = truth.siteCorrelation
        let u0 = truth.siteInterceptSD * z1
        let u1 = truth.siteSlopeSD * (rho * z1 + (1 - rho * rho).squareRoot() * z2)
        var x1 = [Double](), x2 = [Double](), x3 = [Double](), patient = [Double](), y = [Double]()
        x1.reserveCapacity(n); x2.reserveCapacity(n); x3.reserveCapacity(n)
        patient.reserveCapacity(n); y.reserveCapacity(n)
        let b = truth.beta
        let lo = truth.rowsPerPatient.lowerBound, span = UInt64(truth.rowsPerPatient.count)
        var p = 0
        while y.count < n {
            p += 1
            let visits = min(n - y.count, lo + Int(rng.next() % span))
            let up = truth.patientSD * rng.normal()
            for _ in 0..<visits {
                let a = rng.normal(), c = rng.normal(), d = rng.normal()
                let e = truth.sigma * rng.normal()
                x1.append(a); x2.append(c); x3.append(d); patient.append(Double(p))
                y.append(b[0] + u0 + up + (b[1] + u1) * a + b[2] * c + b[3] * d + e)
            }
        }
        // The binary outcome draws from a stream of its own, so y is unchanged.
        var rngB = SeededRandom(seed: (seed &+ UInt64(index) &* 0x9E37_79B9_7F4A_7C15) ^ 0xB1A5_ED0B_1A57_0001)
        var yb = [Double](); yb.reserveCapacity(n)
        for i in 0..<y.count {
            let eta = -0.5 + 0.4 * x1[i] - 0.3 * x2[i] + 0.2 * x3[i] + 0.5 * z1
            yb.append(rngB.uniform() < 1 / (1 + Foundation.exp(-eta)) ? 1 : 0)
        }
        var site = Site(name: name, x1: x1, x2: x2, x3: x3, patient: patient, y: y,
                        siteEffects: (u0, u1), patients: p)
        site.yb = yb
        return site
    }
}
