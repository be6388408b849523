// Confidence intervals for a fit (`--confint profile|wald`): lme4's
// confint(method = "profile") for LMMs (Math/ProfileLikelihood.swift), Wald
// intervals for the fixed effects of any model, and a profile interval for
// the ICC of a random-intercept LMM. The profile's points are evaluated from
// the sites' θ-free sums when every term is grouped by site (no round), and
// otherwise in batched evaluate requests: one round per step of all the
// bound searches together.

import Foundation
import Math
import Protocol

public enum ConfidenceIntervalMethod: String, Sendable, CaseIterable {
    case profile, wald
}

extension FitResult {
    /// One row of lme4's confint table; nil bounds where R has NA (Wald
    /// bounds of variance parameters) or the search did not converge.
    public struct ConfidenceInterval: Codable, Sendable, Equatable {
        public var parameter: String
        public var lower: Double?
        public var upper: Double?
        public var method: String
        enum CodingKeys: String, CodingKey { case parameter, lower, upper, method }
        public func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(parameter, forKey: .parameter)
            try c.encode(lower, forKey: .lower)   // explicit null, as R's NA
            try c.encode(upper, forKey: .upper)
            try c.encode(method, forKey: .method)
        }
    }
    /// A group's ICC σ²_g/(σ²_g + σ²) with its 95% profile-likelihood interval.
    public struct ICCInterval: Codable, Sendable, Equatable {
        public var group: String
        public var icc: Double
        public var lower: Double?
        public var upper: Double?
        public var method: String
        enum CodingKeys: String, CodingKey { case group, icc, lower, upper, method }
    }
    /// How the profile was computed: rounds (0 when the sites sent θ-free
    /// sums), θ points evaluated, and the ML deviance at its minimum.
    public struct ProfileCost: Codable, Sendable, Equatable {
        public var rounds: Int
        public var batches: Int
        public var points: Int
        public var mlDeviance: Double
        /// Bytes the profile's rounds sent to and received from all sites.
        public var bytesSent: Int
        public var bytesReceived: Int
        enum CodingKeys: String, CodingKey {
            case rounds, batches, points, mlDeviance = "ml_deviance", bytesSent = "bytes_sent", bytesReceived = "bytes_received"
        }
    }
}

enum ConfidenceIntervals {
    /// Levels of each term's grouping factor over all sites (as ResultBuilder counts them).
    static func groupCounts(_ session: FitSession) -> [Int] {
        GroupingChecks.pooledLevels(session.spec, prepared: session.prepared)
    }

    /// lme4's parameter list for `confint`: .sig01, … (each term's sds and
    /// correlations, in VarCorr's order), .sigma, then the fixed effects.
    static func parameters(spec: ModelSpec, structure: CovarianceStructure, order: [Int]) -> (list: [ProfileParameter?], names: [String]) {
        var list: [ProfileParameter?] = [], names: [String] = []
        var k = 0
        for t in order {
            let entries = structure.termEntries(t)
            for e in entries {
                k += 1
                let name = String(format: ".sig%02d", k)
                names.append(name)
                if e.row == e.col {
                    let row = entries.filter { $0.row == e.row }.map(\.theta)
                    list.append(ProfileParameter(name: name, kind: .standardDeviation(row: row)))
                } else if e.row == 1 && e.col == 0, let d = entries.first(where: { $0.row == 1 && $0.col == 1 }) {
                    list.append(ProfileParameter(name: name, kind: .correlation(offDiagonal: e.theta, diagonal: d.theta)))
                } else {
                    list.append(nil)   // correlations beyond a term's first two columns: not profiled
                }
            }
        }
        names.append(".sigma"); list.append(ProfileParameter(name: ".sigma", kind: .sigma))
        for (j, c) in spec.fixed.enumerated() {
            names.append(c.name); list.append(ProfileParameter(name: c.name, kind: .fixed(j)))
        }
        return (list, names)
    }

    static func variableNames(_ spec: ModelSpec, structure: CovarianceStructure, order: [Int]) -> [String] {
        parameters(spec: spec, structure: structure, order: order).names.filter { n in !spec.fixed.contains { $0.name == n } }
    }

    /// Wald intervals: the fixed effects' estimate ± z·SE; variance rows null.
    static func wald(_ result: FitResult, variance names: [String]) -> [FitResult.ConfidenceInterval] {
        let z = StandardNormal.quantile975
        return names.map { FitResult.ConfidenceInterval(parameter: $0, lower: nil, upper: nil, method: "Wald") }
            + result.fixedEffects.map {
                FitResult.ConfidenceInterval(parameter: $0.name, lower: $0.estimate - z * $0.stdError,
                                             upper: $0.estimate + z * $0.stdError, method: "Wald")
            }
    }

    struct Profiled {
        var rows: [FitResult.ConfidenceInterval]
        var icc: [FitResult.ICCInterval]
        var cost: FitResult.ProfileCost
        var messages: [String]
    }

    /// The profile intervals (and the ICC's, for one scalar term) of an LMM
    /// fitted at θ̂ (`theta`, the objective's coordinates).
    static func profile(_ objective: LMMObjective, theta: [Double], beta: [Double], sigma: Double,
                        unscaledCovariance: Matrix, method: EstimationMethod, groupCounts: [Int]) throws -> Profiled {
        let session = objective.session, spec = session.spec, structure = session.structure
        let roundsBefore = session.federation.rounds
        let sentBefore = session.federation.bytesSent.reduce(0, +), receivedBefore = session.federation.bytesReceived.reduce(0, +)
        let order = VarianceComponentTable.lme4Order(levels: groupCounts)
        let (list, names) = parameters(spec: spec, structure: structure, order: order)
        let se = (0..<spec.fixedCount).map { (unscaledCovariance[$0, $0]).squareRoot() * sigma }
        let evaluate: ProfileLikelihood.Evaluate = { try objective.totals(batch: $0, order: 2) }
        let engine = ProfileLikelihood(structure: structure, parameters: list.compactMap { $0 }, fixedStandardErrors: se)
        let outcome = try engine.run(start: theta, evaluate: evaluate)
        var rows: [FitResult.ConfidenceInterval] = []
        var messages: [String] = []
        var found = outcome.intervals.makeIterator()
        for (name, p) in zip(names, list) {
            guard p != nil, let i = found.next() else {
                rows.append(.init(parameter: name, lower: nil, upper: nil, method: "profile"))
                messages.append("profile interval for \(name) not computed: only the correlation of a term's first two columns is profiled")
                continue
            }
            if i.lower == nil || i.upper == nil { messages.append("profile search for \(name) did not converge") }
            rows.append(.init(parameter: name, lower: i.lower, upper: i.upper, method: "profile"))
        }
        var batches = outcome.batches, points = outcome.points
        // The ICC of one scalar term: the fit's own criterion profiled in θ = σ_g/σ.
        var icc: [FitResult.ICCInterval] = []
        if structure.thetaCount == 1 && structure.terms.count == 1 {
            var one = ProfileLikelihood(structure: structure, parameters: [ProfileParameter(name: "theta", kind: .scalarTheta)],
                                        fixedStandardErrors: se)
            one.method = method
            one.z = (3.841458820694124).squareRoot()   // √qchisq(0.95, 1)
            let o = try one.run(start: theta, evaluate: evaluate)
            batches += o.batches; points += o.points
            let map: (Double?) -> Double? = { $0.map { $0 * $0 / (1 + $0 * $0) } }
            let t = theta[0]
            icc.append(.init(group: spec.terms[0].name, icc: t * t / (1 + t * t), lower: map(o.intervals[0].lower),
                             upper: map(o.intervals[0].upper), method: "profile"))
        }
        let cost = FitResult.ProfileCost(rounds: session.federation.rounds - roundsBefore, batches: batches, points: points,
                                         mlDeviance: outcome.minimumDeviance,
                                         bytesSent: session.federation.bytesSent.reduce(0, +) - sentBefore,
                                         bytesReceived: session.federation.bytesReceived.reduce(0, +) - receivedBefore)
        return Profiled(rows: rows, icc: icc, cost: cost, messages: messages)
    }
}
