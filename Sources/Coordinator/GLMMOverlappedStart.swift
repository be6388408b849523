// The GLMM's start overlapped with its fit. Every evaluation over agents is a
// round to every site, and the GLM that starts a GLMM fit (θ = 0, β alone)
// used to run to convergence before the full fit's first round. But the full
// fit needs only a rough β to start from; the converged GLM is needed only
// at the end, as the boundary candidate θ = 0. So the GLM runs alone until
// it is rough, then the rest of the GLM and the full fit run side by side as
// two lanes (RoundBatcher.swift): each round carries both lanes' evaluate
// requests in one batch line per site, so the GLM's remaining evaluations
// cost no rounds. The sites answer exactly the evaluations they answered
// before (the same GLM steps, the full fit from a rougher β), so nothing new
// is revealed; the answers are those of the requests sent alone.

import Foundation
import Math

extension GLMMObjective {
    /// The GLM's β is a good enough start for the full fit once its Newton
    /// decrement (the deviance a full GLM step would still gain) is below
    /// this. Measured on the 88 GLMM snapshot fits (BENCHMARKS.md, "The GLM
    /// start overlapped"): at 1 every fit reaches the same optimum in 15%
    /// fewer rounds; from rougher starts (10, 100) one Laplace fit
    /// (randomized binomial-005) ends in the local minimum at θ = 0 instead
    /// of the lower one inside, the path the full fit takes depending on it.
    static let roughDecrement = 1.0

    static func isRoughEnough(_ decrement: Double?) -> Bool {
        guard let decrement else { return false }
        return decrement < roughDecrement
    }

    /// The full fit from `start` and the rest of the GLM from `rough`, as two
    /// lanes whose rounds share the wire. Both lanes run the unchanged
    /// optimizer; each counts its own evaluations.
    mutating func sideBySide(_ optimizer: BoundedNewton, from start: [Double], glm: BoundedNewton,
                             resuming rough: BoundedNewton.Result) throws -> (full: BoundedNewton.Result, glm: BoundedNewton.Result) {
        let rest = { var r = glm; r.maxEvaluations = glm.maxEvaluations - rough.evaluations; return r }()
        let known = BoundedNewton.Evaluation(value: rough.value, gradient: rough.gradient, hessian: rough.hessian)
        let base = self
        let outcome = session.federation.lanes(2) { lane, federation -> LaneOutcome in
            var objective = base
            objective.session = base.session.on(federation)
            let result = lane == 0 ? try optimizer.minimize(from: start) { try objective.evaluate($0) }
                                   : try rest.minimize(from: rough.x, at: known) { try objective.glmEvaluate($0) }
            return LaneOutcome(result: result, evaluations: objective.evaluations - base.evaluations)
        }
        // The GLM's failure first: alone, it came before the full fit's.
        let continued = try outcome.results[1].get().value, full = try outcome.results[0].get().value
        evaluations += continued.evaluations + full.evaluations
        var glmResult = continued.result
        glmResult.evaluations += rough.evaluations
        return (full.result, glmResult)
    }

    struct LaneOutcome: Sendable {
        var result: BoundedNewton.Result
        var evaluations: Int
    }
}

extension FitSession {
    /// The same session's requests sent through another federation (a lane's).
    func on(_ federation: Federation) -> FitSession {
        FitSession(federation: federation, dataset: dataset, spec: spec, id: id, prepared: prepared)
    }
}
