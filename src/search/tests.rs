//! Unit tests of the search.

use super::runner::{baseline_rng, dz};
use super::*;
use crate::error::Error;
use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn outcome(objectives: &[f64], z0_z: &[(Vec<f32>, Vec<f32>)]) -> SearchOutcome {
    let step = |(i, &o): (usize, &f64)| StepRecord {
        step: i,
        mean_objective: o,
        mean_divergence: 0.0,
        max_divergence: 0.0,
        mean_dz: 0.0,
        mean_measures: vec![],
    };
    let sample = |(z0, z): &(Vec<f32>, Vec<f32>)| SampleRecord {
        z0: z0.clone(),
        z: z.clone(),
        outside_support: None,
        divergence_before: 0.0,
        divergence_after: 0.0,
        log_probs_before: vec![],
        log_probs_after: vec![],
        dz: 0.5,
        measures_before: vec![],
        measures_after: vec![],
    };
    let x = Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap();
    SearchOutcome {
        config: SearchConfig::default(),
        model_names: vec![],
        class_names: vec![],
        measure_names: vec![],
        samples: z0_z.iter().map(sample).collect(),
        trajectory: objectives.iter().enumerate().map(step).collect(),
        baseline: Baseline {
            divergences: vec![],
            mean: 1.0,
            max: 1.0,
        },
        steps_run: objectives.len().saturating_sub(1),
        stopped_early: false,
        latent_support: None,
        x0: x.clone(),
        x,
    }
}

#[test]
fn warnings_follow_their_documented_criteria() {
    let stay = (vec![1.0, 0.0], vec![2.0, 1.0]);
    // ‖z‖ = 10 ‖z0‖ exactly: run away.
    let away = (vec![0.0, 0.5], vec![0.0, 5.0]);
    let almost = (vec![0.0, 0.5], vec![0.0, 4.9]);
    assert_eq!(
        outcome(&[1.0, 2.0, 1.5], std::slice::from_ref(&stay)).warnings(),
        []
    );
    assert_eq!(
        outcome(&[1.0, 2.0, 0.5], std::slice::from_ref(&stay)).warnings(),
        [AscentWarning::ObjectiveFell {
            start: 1.0,
            end: 0.5
        }]
    );
    // No steps, nothing to fall.
    assert_eq!(outcome(&[1.0], std::slice::from_ref(&stay)).warnings(), []);
    // Half the samples is enough; fewer is not.
    let w = outcome(&[0.0, 1.0], &[stay.clone(), away.clone()]).warnings();
    assert_eq!(
        w,
        [AscentWarning::RanAway {
            samples: 1,
            batch: 2,
            mean_dz: 0.5
        }]
    );
    assert!(w[0].to_string().contains("1 of 2 samples"), "{}", w[0]);
    let three = [stay.clone(), away.clone(), almost.clone()];
    assert_eq!(outcome(&[0.0, 1.0], &three).warnings(), []);
    // A sample at the origin that stayed there did not run away.
    let still = (vec![0.0, 0.0], vec![0.0, 0.0]);
    assert_eq!(outcome(&[0.0, 1.0], &[still]).warnings(), []);
}

/// Regression: a JS pair of two nearly uniform SqueezeNets, whose
/// divergence was small beside the prior term, ended with a lower mean
/// divergence than it started from (lift 0.69) while the objective rose,
/// and nothing was said.
#[test]
fn a_divergence_that_fell_while_the_objective_rose_is_a_warning() {
    let stay = (vec![1.0, 0.0], vec![2.0, 1.0]);
    let with = |before: f64, after: f64, objectives: &[f64]| {
        let mut o = outcome(objectives, std::slice::from_ref(&stay));
        o.samples[0].divergence_before = before;
        o.samples[0].divergence_after = after;
        o.warnings()
    };
    let w = with(0.3, 0.2, &[1.0, 2.0]);
    assert_eq!(
        w,
        [AscentWarning::DivergenceFell {
            start: 0.3,
            end: 0.2,
            lambda: SearchConfig::default().lambda
        }]
    );
    assert_eq!(w[0].kind().name(), "divergence fell");
    assert_eq!(
        serde_json::to_string(&w[0].kind()).unwrap(),
        "\"divergence fell\""
    );
    assert!(w[0].to_string().contains("lower `lambda`"), "{}", w[0]);
    // Risen, unchanged, or fallen by 1% or less (a TV saturated near 1
    // moved in its sixth digit): nothing.
    assert_eq!(with(0.2, 0.3, &[1.0, 2.0]), []);
    assert_eq!(with(0.99899, 0.998989, &[1.0, 2.0]), []);
    assert_eq!(with(1.0, 0.99, &[1.0, 2.0]), []);
    assert_eq!(with(1.0, 0.98, &[1.0, 2.0]).len(), 1);
    assert_eq!(with(0.0, 0.0, &[1.0, 2.0]), []);
    // With the objective fallen too, that warning alone (the step size).
    assert!(matches!(
        with(0.3, 0.2, &[2.0, 1.0])[..],
        [AscentWarning::ObjectiveFell { .. }]
    ));
    // No steps.
    assert_eq!(with(0.3, 0.2, &[1.0]), []);
}

#[test]
fn the_baseline_stream_is_not_z0s() {
    let draw = |rng: &mut ChaCha8Rng| {
        crate::model::sample_standard_normal((4, 3), rng, &Device::Cpu)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .unwrap()
    };
    let z0 = draw(&mut ChaCha8Rng::seed_from_u64(9));
    let baseline = draw(&mut baseline_rng(9));
    assert_ne!(z0, baseline);
    assert_eq!(baseline, draw(&mut baseline_rng(9)));
    assert_ne!(baseline, draw(&mut baseline_rng(10)));
}

#[test]
fn non_finite_sites_and_stages_read_as_sentences() {
    let err = Error::NonFinite {
        site: NonFiniteSite::Logits("cnn_a".into()),
        stage: SearchStage::Step(2),
        sample: 3,
        value: f64::INFINITY,
    };
    let msg = err.to_string();
    assert!(
        msg.contains("a logit of classifier `cnn_a` is inf at step 2 for sample 3"),
        "{msg}"
    );
    assert!(msg.contains("check the classifier"), "{msg}");
}

/// dz = ‖z − z0‖ / ‖z‖ per row, worked on the host from the read rows:
/// rows of d values each, NaN for a zero z (0 / 0), as on the device.
#[test]
fn dz_is_the_relative_move_of_each_row() {
    let z = [3.0, 4.0, 1.0, 0.0, 0.0, 0.0];
    let z0 = [0.0, 0.0, 1.0, 0.0, 0.0, 0.0];
    let got = dz(&z, &z0, 2);
    assert_eq!(got.len(), 3);
    assert_eq!(got[0], 1.0);
    assert_eq!(got[1], 0.0);
    assert!(got[2].is_nan());
    let moved = dz(&[1.0, 1.0], &[1.0, 0.0], 2)[0];
    assert!((moved - 1.0 / 2f64.sqrt()).abs() < 1e-15);
}

/// The step's read, in order: a tensor read whole comes back, and a NaN
/// in it names the sample of its row (z is `[B, d]`: the row, not the
/// position); a summed probe before it that holds a NaN is named first.
#[test]
fn the_read_names_the_first_probe_and_the_sample_of_a_whole_tensor() {
    use super::non_finite::{read_checked, Probe};
    let dev = Device::Cpu;
    let at = SearchStage::Step(3);
    let z = Tensor::new(&[[1f32, 2.0], [3.0, 4.0], [5.0, f32::NAN]], &dev).unwrap();
    let fine = Tensor::new(&[0.5f32, 1.5, 2.5], &dev).unwrap();
    let bad_sum = Tensor::new(&[0f32, f32::INFINITY, 0.0], &dev).unwrap();
    let figures = read_checked(
        &[
            Probe::sum(NonFiniteSite::Divergence, at, &fine),
            Probe::values(NonFiniteSite::Objective, at, &fine),
        ],
        at,
    )
    .unwrap();
    assert_eq!(figures, vec![vec![0.5, 1.5, 2.5]]);
    let err = read_checked(&[Probe::values(NonFiniteSite::Latent, at, &z)], at).unwrap_err();
    match err {
        Error::NonFinite {
            site,
            stage,
            sample,
            value,
        } => {
            assert_eq!((site, stage, sample), (NonFiniteSite::Latent, at, 2));
            assert!(value.is_nan());
        }
        other => panic!("{other}"),
    }
    let first = read_checked(
        &[
            Probe::sum(NonFiniteSite::Gradient, SearchStage::Step(2), &bad_sum),
            Probe::values(NonFiniteSite::Latent, at, &z),
        ],
        at,
    )
    .unwrap_err();
    assert!(
        matches!(
            first,
            Error::NonFinite {
                site: NonFiniteSite::Gradient,
                stage: SearchStage::Step(2),
                sample: 1,
                ..
            }
        ),
        "{first}"
    );
}

/// A search's note on latents outside the generator's support: none
/// without a support or with every coordinate inside; else the records'
/// counts, a record without one counted from its z.
#[test]
fn latents_outside_the_support_are_counted_from_the_records() {
    let support = crate::model::LatentSupport::Box { half_width: 1.0 };
    let mut o = outcome(
        &[0.0, 1.0],
        &[
            (vec![0.5, -0.5, 0.0], vec![1.5, -0.5, 0.0]),
            (vec![0.5, -0.5, 0.0], vec![0.5, -2.0, 3.0]),
            (vec![0.5, -0.5, 0.0], vec![0.5, -0.5, 0.0]),
        ],
    );
    assert_eq!(o.outside_support("g"), None, "no support, no note");
    o.latent_support = Some(support);
    o.samples[0].outside_support = Some(1);
    let note = o.outside_support("g").unwrap();
    assert_eq!(
        (
            note.coordinates,
            note.samples_outside,
            note.samples,
            note.dim
        ),
        (3, 2, 3, 3)
    );
    assert_eq!(
        note.to_string(),
        "3 of 3×3 latent coordinates (in 2 of 3 samples) ended outside generator `g`'s box \
         |z| ≤ 1; the images there are beyond what the generator was sampled on"
    );
    for s in &mut o.samples {
        s.z = s.z0.clone();
        s.outside_support = Some(0);
    }
    assert_eq!(o.outside_support("g"), None, "all inside, no note");
}
