//! The int8 model: calibration, the int8 file and its errors, and int8 logits against f32.

use convkit_microkernel::{CpuFeatures, Family};
use convkit_model::{
    seeded_images, Int8Weights, ModelConfig, ModelError, RangeMethod, ResNetSpec, SeededWeights, Variant, Weights,
    Workspace,
};
use convkit_tensor::{Layout, Precision, Shape, Tensor};
use convkit_testkit::random_tensor;
use safetensors::{Dtype, SafeTensors};

/// Max |got - want| over max |want|.
fn relative_error(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    got.iter().zip(want).fold(0.0f32, |m, (g, w)| m.max((g - w).abs())) / scale
}

fn argmax(row: &[f32]) -> usize {
    (0..row.len()).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap()
}

/// `n` seeded calibration images of `side` x `side`, NCHW.
fn calibration_images(n: usize, side: usize) -> Tensor {
    let data = seeded_images(n, side, side, 1);
    Tensor::from_slice(Shape::new(n, 3, side, side), Layout::Nchw, &data).unwrap()
}

fn int8(spec: ResNetSpec) -> ModelConfig {
    ModelConfig::new(spec).with_precision(Precision::Int8)
}

/// int8 ResNet-50 of every variant at 224x224, calibrated on 8 seeded images, against the
/// f32 network on 2 other images: within the error OpenVINO's int8 (NNCF post-training
/// quantization of the same ONNX graph on the same kind of calibration images) shows on
/// these networks (`tools/compare/compare.py numerics`, an Intel Xeon with AVX512-VNNI;
/// see docs/results.md), 1 and 2 threads bitwise equal. Top-1 agreement is printed.
#[test]
fn int8_resnet50_within_openvino_int8_error() {
    let x = random_tensor(Shape::new(2, 3, 224, 224), Layout::Nchw, 11);
    let calibration = calibration_images(8, 224);
    let pool = |threads| rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    for (v, openvino_error) in
        [(Variant::A, 1.75e-2), (Variant::B, 1.77e-2), (Variant::C, 1.90e-2), (Variant::D, 1.83e-2)]
    {
        let spec = ResNetSpec::resnet50(v);
        let want = pool(2).install(|| {
            ModelConfig::new(spec).build_seeded(0).unwrap().forward(x.view(), &mut Workspace::new()).unwrap().to_vec()
        });
        let calibrated = pool(2)
            .install(|| {
                int8(spec).calibrate(SeededWeights::new(spec, 0), calibration.view(), RangeMethod::Percentile, "test")
            })
            .unwrap();
        let model = int8(spec).build_int8(calibrated.clone()).unwrap();
        assert_eq!(model.precision(), Precision::Int8);
        let run = |threads| pool(threads).install(|| model.forward(x.view(), &mut Workspace::new()).unwrap().to_vec());
        let (one, two) = (run(1), run(2));
        assert!(one.iter().zip(&two).all(|(a, b)| a.to_bits() == b.to_bits()), "{v}: 1 and 2 threads differ");
        let err = relative_error(&one, &want);
        let top1 = one.chunks(1000).zip(want.chunks(1000)).filter(|(g, w)| argmax(g) == argmax(w)).count();
        println!(
            "{v} int8: relative error {err:.2e} (OpenVINO int8 {openvino_error:.1e}), top-1 agrees on {top1} of 2"
        );
        assert!(err < openvino_error, "{v} int8: relative error {err:.2e}, OpenVINO int8 {openvino_error:.1e}");
    }
}

/// Small networks of every variant, every input size down to 1x1, both layouts: the int8
/// network runs and stays near f32 (each layer's rounding is at most half a step of its
/// tensor's grid; these ranges come from the same images).
#[test]
fn small_int8_networks_follow_f32_in_every_variant() {
    for v in Variant::ALL {
        let spec = ResNetSpec::new(v, [1, 1, 1, 1]);
        for (side, layout) in [(32, Layout::Nchw), (17, Layout::Nhwc), (1, Layout::Nchw)] {
            let x = random_tensor(Shape::new(2, 3, side, side), Layout::Nchw, 5).to_layout(layout);
            let calibrated =
                int8(spec).calibrate(SeededWeights::new(spec, 2), x.view(), RangeMethod::MinMax, "x").unwrap();
            let got = int8(spec)
                .build_int8(calibrated.clone())
                .unwrap()
                .forward(x.view(), &mut Workspace::new())
                .unwrap()
                .to_vec();
            let want = ModelConfig::new(spec)
                .build_seeded(2)
                .unwrap()
                .forward(x.view(), &mut Workspace::new())
                .unwrap()
                .to_vec();
            let err = relative_error(&got, &want);
            assert!(err < 5e-2, "{v} {side}x{side} {layout:?}: int8 relative error {err:.2e}");
        }
    }
}

/// Calibration is deterministic, and the file holds what the model is built from: saved
/// and loaded, the same logits bit for bit, the metadata naming the recipe.
#[test]
fn int8_file_round_trip() {
    let spec = ResNetSpec::new(Variant::D, [1, 1, 1, 1]);
    let images = calibration_images(2, 32);
    let calibrate =
        || int8(spec).calibrate(SeededWeights::new(spec, 4), images.view(), RangeMethod::Percentile, "imgs").unwrap();
    let calibrated = calibrate();
    let bytes = calibrated.to_safetensors_bytes().unwrap();
    assert_eq!(bytes, calibrate().to_safetensors_bytes().unwrap(), "calibration is not deterministic");
    let dir = std::env::temp_dir().join(format!("convkit-int8-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("d.int8.safetensors");
    calibrated.save(&path).unwrap();
    let (loaded, meta) = int8(spec).load(&path).unwrap();
    assert_eq!(meta.precision, Some(Precision::Int8));
    assert_eq!(meta.calibration.as_deref(), Some("percentile ranges over 2 imgs"));
    assert!(calibrated.activation("input").is_some() && calibrated.activation("layer4.0.conv3").is_some());
    let x = random_tensor(Shape::new(1, 3, 40, 40), Layout::Nchw, 9);
    let direct =
        int8(spec).build_int8(calibrated.clone()).unwrap().forward(x.view(), &mut Workspace::new()).unwrap().to_vec();
    let from_file = loaded.forward(x.view(), &mut Workspace::new()).unwrap().to_vec();
    assert!(direct.iter().zip(&from_file).all(|(a, b)| a.to_bits() == b.to_bits()));
    std::fs::remove_dir_all(&dir).ok();
}

/// The int8 file with the tensor `key` replaced by `dtype` `shape` `bytes` (or removed).
fn edited(bytes: &[u8], key: &str, new: Option<(Dtype, Vec<usize>, Vec<u8>)>) -> Vec<u8> {
    let st = SafeTensors::deserialize(bytes).unwrap();
    let (_, header) = SafeTensors::read_metadata(bytes).unwrap();
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
        .iter()
        .filter(|(name, _)| *name != key)
        .map(|(name, v)| (name.to_string(), v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    if let Some((dtype, shape, data)) = new {
        tensors.push((key.to_string(), dtype, shape, data));
    }
    let views: Vec<_> = tensors
        .iter()
        .map(|(k, d, s, b)| (k.as_str(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, header.metadata().clone()).unwrap()
}

#[test]
fn bad_int8_files_and_calls_are_errors_that_name_the_fault() {
    let spec = ResNetSpec::new(Variant::D, [1, 1, 1, 1]);
    let images = calibration_images(1, 32);
    let calibrated =
        int8(spec).calibrate(SeededWeights::new(spec, 1), images.view(), RangeMethod::MinMax, "x").unwrap();
    let bytes = calibrated.to_safetensors_bytes().unwrap();
    let load = |b: &[u8]| Int8Weights::from_safetensors_bytes(spec, b).unwrap_err().to_string();

    // Float weights where int8 is asked for, and the other way round.
    let float = Weights::seeded(spec, 1).to_safetensors_bytes().unwrap();
    assert!(load(&float).contains("convkit calibrate"), "{}", load(&float));
    let e = Weights::from_safetensors_bytes(spec, &bytes).unwrap_err().to_string();
    assert!(e.contains("int8"), "{e}");
    let e = ModelConfig::new(spec).with_precision(Precision::Int8).build_seeded(1);
    assert!(e.is_ok(), "seeded int8 builds by calibrating: {e:?}");
    let e = int8(spec).build(Weights::seeded(spec, 1)).unwrap_err().to_string();
    assert!(e.contains("calibrat"), "{e}");
    let e = ModelConfig::new(spec).build_int8(calibrated.clone()).unwrap_err().to_string();
    assert!(e.contains("int8"), "{e}");
    let e = int8(spec).with_parallel_branches(true).build_int8(calibrated.clone()).unwrap_err().to_string();
    assert!(e.contains("parallel_branches"), "{e}");

    // Quantized for another network.
    let other = ResNetSpec::new(Variant::C, [1, 1, 1, 1]);
    let e = Int8Weights::from_safetensors_bytes(other, &bytes).unwrap_err();
    assert!(matches!(e, ModelError::WrongNetwork { .. }), "{e}");
    let e = int8(other).build_int8(calibrated.clone()).unwrap_err();
    assert!(matches!(e, ModelError::WrongNetwork { .. }), "{e}");

    // A missing scale, a zero point out of range, a weight of -128, a negative scale.
    let e = load(&edited(&bytes, "layer1.0.conv2.output_scale", None));
    assert!(e.contains("layer1.0.conv2.output_scale"), "{e}");
    let zero = edited(&bytes, "input.zero_point", Some((Dtype::I32, vec![1], 300i32.to_le_bytes().to_vec())));
    assert!(load(&zero).contains("zero point 300"), "{}", load(&zero));
    let w = SafeTensors::deserialize(&bytes).unwrap().tensor("conv1.0.weight").unwrap().data().to_vec();
    let mut bad_w = w.clone();
    bad_w[5] = 0x80;
    let e = load(&edited(&bytes, "conv1.0.weight", Some((Dtype::I8, vec![32, 3, 3, 3], bad_w))));
    assert!(e.contains("conv1.0.weight") && e.contains("-128"), "{e}");
    let e = load(&edited(&bytes, "fc.bias", Some((Dtype::I8, vec![1000], vec![0; 1000]))));
    assert!(e.contains("fc.bias") && e.contains("dtype"), "{e}");
    let scales = (-1.0f32).to_le_bytes().repeat(256);
    let e = load(&edited(&bytes, "layer1.0.conv3.weight_scale", Some((Dtype::F32, vec![256], scales.clone()))));
    assert!(e.contains("layer1.0.conv3.weight_scale") && e.contains("-1"), "{e}");
    let e = load(&edited(&bytes, "layer1.0.conv3.weight_scale", Some((Dtype::F32, vec![64], scales[..256].to_vec()))));
    assert!(e.contains("layer1.0.conv3.weight_scale") && e.contains("shape"), "{e}");
    let e = load(&edited(&bytes, "extra.tensor", Some((Dtype::F32, vec![1], vec![0; 4]))));
    assert!(e.contains("extra.tensor"), "{e}");

    // An activation that overflows f32 cannot be calibrated.
    let nan = Tensor::from_slice(Shape::new(1, 3, 8, 8), Layout::Nchw, &[f32::NAN; 192]).unwrap();
    let e = int8(spec).calibrate(SeededWeights::new(spec, 1), nan.view(), RangeMethod::MinMax, "x").unwrap_err();
    assert!(e.to_string().contains("'input'"), "{e}");
}

/// Every family with int8 kernels runs the same int8 network: the u8 activations are
/// bitwise the same on each (tests/sweep.rs proves it tile by tile), so the logits differ
/// only by the f32 classifier's and global pool's rounding on each family's f32 kernel,
/// far below one step of any activation's grid.
#[test]
fn int8_network_is_the_same_on_every_family() {
    let spec = ResNetSpec::new(Variant::D, [1, 1, 1, 1]);
    let images = calibration_images(2, 40);
    let calibrated =
        int8(spec).calibrate(SeededWeights::new(spec, 6), images.view(), RangeMethod::Percentile, "x").unwrap();
    let x = random_tensor(Shape::new(2, 3, 40, 40), Layout::Nchw, 21);
    let families: Vec<Family> =
        Family::available_in(CpuFeatures::detected()).filter(|f| f.precisions().contains(&Precision::Int8)).collect();
    assert!(families.len() >= 2, "at least a native or widening family and the portable one: {families:?}");
    let logits: Vec<Vec<f32>> = families
        .iter()
        .map(|&family| {
            let model = int8(spec).with_features(family.requires()).build_int8(calibrated.clone()).unwrap();
            assert_eq!(model.kernel().family(), family, "the mask of {family} picks it");
            model.forward(x.view(), &mut Workspace::new()).unwrap().to_vec()
        })
        .collect();
    for (family, got) in families.iter().zip(&logits).skip(1) {
        let err = relative_error(got, &logits[0]);
        assert!(err < 1e-5, "{family} against {}: relative error {err:.2e}", families[0]);
    }
}
