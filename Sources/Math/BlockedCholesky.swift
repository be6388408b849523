// The per-level steps of the blocked Cholesky factor that both the LMM
// contribution and the GLMM's penalized least squares step are made of.
// With the site's random effects ordered as in SiteBlocks (the first
// factor's levels, then the dense tail),
//     ΛᵀZᵀZΛ + I = [L₁₁ 0; L₂₁ L₂₂] [L₁₁ 0; L₂₁ L₂₂]ᵀ,
// L₁₁ is block diagonal, one block F_l per level l of the first factor:
//     F_l F_lᵀ = T₁ᵀ ZZ_l T₁ + I,
// and the rows of F_l⁻¹T₁ᵀ applied to level l's cross products (with the
// tail columns, or with [X y]) give L₂₁ and the reduced [X y] blocks. The
// tail L₂₂ is then the Cholesky factor of Λ₂ᵀ(ZZ₂₂ − Σ_l YᵀY)Λ₂ + I (LMM)
// (see LMMSite.factorize and BlockedFactor). One code, any jet order:
// values only is the order-0 case (ValueOnly).

enum LevelStep {
    /// F ← L₁₁'s block for one level: F Fᵀ = T₁ᵀ ZZ T₁ + I (`work` is r×r scratch).
    @inline(__always)
    static func factorDiagonal<K: JetArithmetic>(_ F: JetBlock, zz: ConstantBlock, t1: JetBlock, work: JetBlock,
                                                 _ ops: JetOps<K>) throws {
        work.setZero()
        work.addProduct(zz, t1)
        F.setZero()
        F.addProduct(t1, transposed: true, work, ops)
        F.addToDiagonal(1)
        try F.cholesky(ops)
    }

    /// Y ← F⁻¹ T₁ᵀ C: a level's cross products C (with tail columns or with
    /// [X y]) reduced by its diagonal block.
    @inline(__always)
    static func reduce<K: JetArithmetic>(_ Y: JetBlock, _ c: ConstantBlock, t1: JetBlock, factor F: JetBlock, _ ops: JetOps<K>) {
        Y.setZero()
        Y.addProduct(t1, transposed: true, c)
        Y.solveLower(F, ops)
    }
}
