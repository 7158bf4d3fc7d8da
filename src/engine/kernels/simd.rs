//! The kernels' hot loops compiled for the widest vector instructions the
//! CPU has, chosen at run time.
//!
//! A build for plain x86-64 vectorizes with SSE2 (4 lanes), while PyTorch
//! picks AVX2 or AVX-512 at run time. A function declared with
//! [`simd_fn!`] is compiled once per instruction set pulp knows (the crate
//! the gemm crate dispatches with: AVX-512, AVX2 with FMA, the build's
//! own) and runs the best copy this CPU has. Every copy computes the same
//! f32 operations in the same order (Rust never contracts `a · b + c` into
//! a fused multiply-add), so the results are the same bit for bit whichever
//! runs; only the speed differs. The one exception is asked for by name:
//! [`madd`]`::<S>(a, b, c)` (`S`, the copy's instruction set, is in scope
//! in the body) is fused in the copies that have FMA (AVX2, AVX-512, NEON)
//! and rounded twice in the plain one (a software FMA would be tens of
//! times slower there): half the instructions of a multiply-add chain
//! (depthwise taps, polynomials), and results that differ in the last bit
//! between a CPU with FMA and one without, as the gemm crate's kernels
//! already do.
//!
//! Why a macro rather than a closure: a copy gets the target features
//! only where the body is inlined into pulp's per-instruction-set
//! functions. A closure called from those three places is not inlined
//! once it is large (`perf` showed every kernel's closure outside them);
//! the macro puts the body in a `#[inline(always)]` method instead.

/// Declares `fn name(args) [-> ret] { body }` whose body runs compiled for
/// the best instruction set of this CPU (see the [module docs](self)).
/// Arguments are plain `name: Type` (no patterns); the body may call
/// `#[inline(always)]` helpers, which are compiled with it, and name the
/// copy's instruction set `S` (a `pulp::Simd`) to pass on to [`madd`].
macro_rules! simd_fn {
    (
        $(#[$m:meta])*
        $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block
    ) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            struct Op<T>(T);
            impl pulp::WithSimd for Op<($($ty,)*)> {
                type Output = simd_fn!(@ret $($ret)?);
                #[inline(always)]
                fn with_simd<S: pulp::Simd>(self, _: S) -> Self::Output {
                    let ($($arg,)*) = self.0;
                    $body
                }
            }
            pulp::Arch::new().dispatch(Op(($($arg,)*)))
        }
    };
    (@ret) => { () };
    (@ret $t:ty) => { $t };
}

pub(crate) use simd_fn;

/// `a · b + c`, fused into one rounding in a copy whose instruction set
/// `S` has FMA (every one but pulp's plain `Scalar`), else two roundings.
#[inline(always)]
pub(crate) fn madd<S: pulp::Simd>(a: f32, b: f32, c: f32) -> f32 {
    if S::IS_SCALAR {
        a * b + c
    } else {
        a.mul_add(b, c)
    }
}

#[cfg(test)]
mod tests {
    simd_fn! {
        /// A dot product and an elementwise update in one dispatched body.
        fn axpy_dot(a: f32, x: &[f32], y: &mut [f32]) -> f32 {
            let mut acc = [0f32; 8];
            for (i, (y, x)) in y.iter_mut().zip(x).enumerate() {
                *y += a * x;
                acc[i % 8] += *y * x;
            }
            acc.iter().sum()
        }
    }

    simd_fn! {
        /// [`super::madd`] in the copy this CPU runs, and whether that
        /// copy is the plain one.
        fn dispatched_madd(a: f32, b: f32, c: f32) -> (f32, bool) {
            (super::madd::<S>(a, b, c), S::IS_SCALAR)
        }
    }

    /// [`madd`] rounds once where the copy has FMA, twice in the plain
    /// copy: 1 + 2⁻¹² squared less 1 + 2⁻¹¹ is 2⁻²⁴ exactly, which one
    /// rounding keeps and two lose.
    #[test]
    fn madd_fuses_where_the_copy_has_fma() {
        let a = 1.0 + 2f32.powi(-12);
        let c = -(1.0 + 2f32.powi(-11));
        assert_eq!(super::madd::<pulp::Scalar>(a, a, c), 0.0);
        let (got, plain) = dispatched_madd(a, a, c);
        assert_eq!(got, if plain { 0.0 } else { 2f32.powi(-24) });
    }

    /// The copy that runs is the widest this CPU has, as the standard
    /// library detects its features: AVX-512 (pulp's `V4`), AVX2 with FMA
    /// (`V3`), else the plain one. Printed (`--nocapture`) so that a run
    /// under `qemu-x86_64 -cpu Haswell-v4` or `-cpu Nehalem`
    /// (`scripts/test-x86-levels.sh`) shows that the emulation hid what it
    /// should and which copy the kernels took.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_widest_copy_this_cpu_has_runs() {
        macro_rules! all {
            ($($f:tt),*) => { true $(&& std::arch::is_x86_feature_detected!($f))* };
        }
        let v3 = all!("avx", "avx2", "fma", "bmi1", "bmi2", "lzcnt", "popcnt");
        let v4 = v3 && all!("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl");
        let want = if v4 {
            "V4"
        } else if v3 {
            "V3"
        } else {
            "Scalar"
        };
        let arch = match pulp::Arch::new() {
            pulp::Arch::V4(_) => "V4",
            pulp::Arch::V3(_) => "V3",
            _ => "Scalar",
        };
        println!("this CPU: AVX-512 {v4}, AVX2+FMA {v3}; the kernels run pulp's {arch}");
        assert_eq!(arch, want);
        let (_, plain) = dispatched_madd(1.0, 1.0, 1.0);
        assert_eq!(plain, want == "Scalar");
    }

    /// The dispatched copy computes what the plain loops compute, bit for
    /// bit.
    #[test]
    fn a_dispatched_body_computes_the_plain_loops_figures() {
        let x: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut y: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut want = y.clone();
        let mut acc = [0f32; 8];
        for (i, (w, x)) in want.iter_mut().zip(&x).enumerate() {
            *w += 1.5 * x;
            acc[i % 8] += *w * x;
        }
        let dot = axpy_dot(1.5, &x, &mut y);
        assert_eq!(y, want);
        assert_eq!(dot.to_bits(), acc.iter().sum::<f32>().to_bits());
    }
}
