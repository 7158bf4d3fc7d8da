//! Divergences of f32 logits against scipy (bench/divergence_reference.py).

use gevaldi::candle_core::{DType, Device, Tensor, Var, D};
use gevaldi::Divergence;

fn t(rows: &[[f32; 5]; 3]) -> Tensor {
    Tensor::new(rows, &Device::Cpu).unwrap()
}

fn all() -> [Divergence; 5] {
    [
        Divergence::Kl,
        Divergence::ReverseKl,
        Divergence::Jeffreys,
        Divergence::js(),
        Divergence::Tv,
    ]
}

/// gevaldi's figures two ways: `compute` on log_softmax, and the search's
/// head (`of_logits`) on tracked logits.
fn both(d: &Divergence, l1: &Tensor, l2: &Tensor) -> (Vec<f64>, Vec<f64>) {
    let lp = |l: &Tensor| gevaldi::candle_nn::ops::log_softmax(l, D::Minus1).unwrap();
    let a = d.compute(&[lp(l1), lp(l2)]).unwrap();
    let (v1, v2) = (Var::from_tensor(l1).unwrap(), Var::from_tensor(l2).unwrap());
    let head = d
        .of_logits(&[v1.as_tensor().clone(), v2.as_tensor().clone()])
        .unwrap();
    let f = |t: &Tensor| t.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
    (f(&a), f(&head.divergence))
}

/// (name, logits of model 1, logits of model 2, scipy's KL(p‖q), KL(q‖p),
/// Jeffreys, JS, TV), from `python bench/divergence_reference.py`.
type Case = (&'static str, [[f32; 5]; 3], [[f32; 5]; 3], [[f64; 3]; 5]);

const CASES: [Case; 3] = [
    (
        "spread",
        [
            [1.5, -0.25, 3.0, 0.0, -2.0],
            [0.1, 0.2, 0.3, 0.4, 0.5],
            [-4.0, 4.0, 0.0, 1.0, -1.0],
        ],
        [
            [0.5, 2.25, -1.0, 0.0, 1.0],
            [0.5, 0.4, 0.3, 0.2, 0.1],
            [-4.0, 3.5, 0.5, 1.0, -1.5],
        ],
        [
            [
                2.5606383016458416,
                0.039827693461795745,
                0.017465391552240805,
            ],
            [2.442554996457973, 0.03982769346179575, 0.022166962071620208],
            [5.003193298103815, 0.0796553869235915, 0.039632353623861014],
            [
                0.44084395921633485,
                0.009900889336769268,
                0.004831171768341693,
            ],
            [0.7952436413614763, 0.11940367683561454, 0.05259476817068663],
        ],
    ),
    (
        "saturated at ±80",
        [
            [80.0, -80.0, 0.0, 0.0, 0.0],
            [80.0, 79.0, -80.0, -80.0, -80.0],
            [0.0, 0.0, 0.0, 0.0, 80.0],
        ],
        [
            [-80.0, 80.0, 0.0, 0.0, 0.0],
            [79.0, 80.0, -80.0, -80.0, -80.0],
            [0.0, 0.0, 0.0, 0.0, 80.0],
        ],
        [
            [160.0, 0.46211715726000974, 0.0],
            [160.0, 0.46211715726000974, 0.0],
            [320.0, 0.9242343145200195, 0.0],
            [std::f64::consts::LN_2, 0.11094407167172735, 0.0],
            [1.0, 0.4621171572600098, 0.0],
        ],
    ),
    (
        "nearly equal",
        [
            [1.0, 2.0, 3.0, 4.0, 5.0],
            [0.0, 0.0, 0.0, 0.0, 0.0],
            [10.0, -10.0, 3.0, 0.5, 0.25],
        ],
        [
            [1.0, 2.0, 3.0, 4.0, 5.0001],
            [0.0, 1e-4, 0.0, 0.0, 0.0],
            [10.0, -10.0, 3.0, 0.5, 0.2501],
        ],
        [
            [
                1.1600974279283238e-09,
                8.000160706308075e-10,
                2.9098784749848277e-13,
            ],
            [
                1.1600867310914342e-09,
                8.000318486370826e-10,
                2.9119160238981143e-13,
            ],
            [
                2.320184159019758e-09,
                1.60004791926789e-09,
                5.821794498882942e-13,
            ],
            [
                2.900230267812118e-10,
                2.000059343543481e-10,
                7.271692005430323e-14,
            ],
            [
                2.3170375473646407e-05,
                1.6000479596878225e-05,
                5.822563517247483e-09,
            ],
        ],
    ),
];

/// Every divergence of f32 logits, through `compute` (on candle's
/// `log_softmax`) and through the search's head (which works in f64 from
/// the logits, so the two differ by f32 rounding), against scipy in f64 (natural
/// log: JS of disjoint supports is ln 2), and exactly 0 for identical
/// logits. Agreed when
/// written to 2e-7 relative plus 3e-8 absolute; for nearly equal models (true divergences
/// 1e-13 to 1e-9) f32 log-probabilities leave only an absolute 3e-8, of
/// either sign (KL read −6e-9 where scipy has 3e-13).
#[test]
fn divergences_of_f32_logits_match_scipy() {
    for (name, a, b, want) in CASES {
        for (d, want) in all().iter().zip(want) {
            let (x, y) = both(d, &t(&a), &t(&b));
            for ((got, head), want) in x.iter().zip(&y).zip(want) {
                let tol = if name == "nearly equal" {
                    3e-8
                } else {
                    2e-7 * want.abs() + 5e-8
                };
                assert!((got - want).abs() <= tol, "{name} {d}: {x:?}, scipy {want}");
                assert!(
                    (head - want).abs() <= tol,
                    "{name} {d}: the head's {y:?}, scipy {want}"
                );
            }
            let (same, same_head) = both(d, &t(&a), &t(&a));
            assert_eq!(same, [0.0; 3], "{name} {d} of identical logits");
            assert_eq!(same_head, [0.0; 3], "{name} {d} of identical logits");
        }
    }
}

/// Logits of ±1e4 in f32: log-probabilities of −2e4 are clamped at the
/// documented floor of −1e4, so KL of opposite certainties reads 1e4
/// (scipy: 2e4) and Jeffreys 2e4 (scipy: 4e4); JS and TV are exact.
#[test]
fn logits_of_1e4_meet_the_documented_floor() {
    let a = t(&[
        [1e4, -1e4, 0.0, 0.0, 0.0],
        [1e4, 1e4, -1e4, 0.0, 0.0],
        [0.0; 5],
    ]);
    let b = t(&[
        [-1e4, 1e4, 0.0, 0.0, 0.0],
        [1e4, 1e4, -1e4, 0.0, 0.0],
        [0.0; 5],
    ]);
    for (d, want) in all()
        .iter()
        .zip([1e4, 1e4, 2e4, std::f64::consts::LN_2, 1.0])
    {
        let (x, y) = both(d, &a, &b);
        assert_eq!(x, y, "{d}");
        assert!((x[0] - want).abs() <= 1e-6 * want, "{d}: {x:?}");
        assert_eq!(&x[1..], [0.0, 0.0], "{d}");
    }
}
