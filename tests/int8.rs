//! The int8 model: calibration, the int8 file, and int8 logits against f32.

use convkit_model::{seeded_images, Int8Weights, ModelConfig, RangeMethod, ResNetSpec, Variant, Weights, Workspace};
use convkit_tensor::{Layout, Precision, Shape, TensorView};
use convkit_testkit::random_tensor;

/// Max |got - want| over max |want|.
fn relative_error(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    got.iter().zip(want).fold(0.0f32, |m, (g, w)| m.max((g - w).abs())) / scale
}

#[test]
fn explore_int8_error() {
    let x = random_tensor(Shape::new(4, 3, 224, 224), Layout::Nchw, 11);
    let calib = seeded_images(8, 224, 224, 1);
    let images = TensorView::new(Shape::new(8, 3, 224, 224), Layout::Nchw, &calib).unwrap();
    for v in Variant::ALL {
        let w = Weights::seeded(ResNetSpec::resnet50(v), 0);
        let config = ModelConfig::new(w.spec()).with_threads(2);
        let want = config.build(w.clone()).unwrap().forward(x.view(), &mut Workspace::new()).unwrap().to_vec();
        for method in [RangeMethod::MinMax, RangeMethod::Percentile] {
            let q = config.with_precision(Precision::Int8).calibrate(w.clone(), images, method, "test").unwrap();
            let model = config.with_precision(Precision::Int8).build_int8(&q).unwrap();
            let got = model.forward(x.view(), &mut Workspace::new()).unwrap().to_vec();
            println!("{v} {method}: {:.3e}", relative_error(&got, &want));
        }
    }
    let _ = Int8Weights::spec;
}
