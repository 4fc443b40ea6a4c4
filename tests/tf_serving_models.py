"""TF Serving's own test models, made here with the installed TensorFlow (nothing is downloaded).

The shapes of tensorflow_serving/servables/tensorflow/testdata and of the models
tensorflow_model_server_test.py saves: half_plus_two as a TF1 graph with
classify/regress signatures and as a TF2 module, half_plus_three, a
tf.saved_model.save of an unknown-rank function, one with several signatures, a
Keras export, and half_plus_two as TFLite with and without a SignatureDef. Each is
written into a zero-padded version directory, as TF Serving's testdata is.
"""

from __future__ import annotations

from pathlib import Path

VERSION_DIR = "00000123"


def half_plus_n_tf1(base: Path, add: float = 2.0) -> Path:
    """y = 0.5 x + add as a TF1 graph: predict on x, classify_x_to_y / regress_x_to_y on serialized tf.Examples,
    with the classify and regress method names that only the TF1 builder can write."""
    import tensorflow as tf

    v1 = tf.compat.v1
    path = base / VERSION_DIR
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as session:
        a, b = v1.Variable(0.5, name="a"), v1.Variable(add, name="b")
        serialized = v1.placeholder(tf.string, name="tf_example")
        parsed = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})
        x = tf.identity(tf.reshape(parsed["x"], [-1, 1]), name="x")  # [-1, 1], as in TF Serving's testdata
        y = tf.add(a * x, b, name="y")
        session.run(v1.global_variables_initializer())
        signatures = v1.saved_model.signature_def_utils
        builder = v1.saved_model.Builder(str(path))
        builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={
            "serving_default": signatures.predict_signature_def({"x": x}, {"y": y}),
            "classify_x_to_y": signatures.classification_signature_def(serialized, None, y),
            "regress_x_to_y": signatures.regression_signature_def(serialized, y)})
        builder.save()
    return base


def half_plus_two_tf2(base: Path) -> Path:
    """half_plus_two saved by tf.saved_model.save: every signature's method_name is predict."""
    import tensorflow as tf

    def parse_x(inputs):
        return tf.io.parse_example(inputs, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"]

    class HalfPlusTwo(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = tf.Variable(0.5), tf.Variable(2.0)

        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
        def predict(self, x):
            return {"y": self.a * x + self.b}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify(self, inputs):
            return {"scores": self.a * parse_x(inputs) + self.b}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress(self, inputs):
            return {"outputs": self.a * parse_x(inputs) + self.b}

    module = HalfPlusTwo()
    tf.saved_model.save(module, str(base / VERSION_DIR), signatures={
        "serving_default": module.predict, "classify_x_to_y": module.classify, "regress_x_to_y": module.regress})
    return base


def unknown_rank(base: Path) -> Path:
    """The suite's test_tf_saved_model_save: y = 3 * 2 * x for a float tensor of any shape."""
    import tensorflow as tf

    root = tf.train.Checkpoint()
    root.v1, root.v2 = tf.Variable(3.0), tf.Variable(2.0)
    root.f = tf.function(lambda x: {"y": root.v1 * root.v2 * x})
    tf.saved_model.save(root, str(base / VERSION_DIR), root.f.get_concrete_function(tf.TensorSpec(None, tf.float32)))
    return base


def two_signatures(base: Path) -> Path:
    """The suite's test_tf_saved_model_save_multiple_signatures: serving_default answers 1, custom_signature_key 2."""
    import tensorflow as tf

    root = tf.train.Checkpoint()
    root.f = tf.function(lambda x: {"y": tf.ones_like(x)}, input_signature=[tf.TensorSpec(None, tf.float32)])
    root.g = tf.function(lambda x: {"y": 2 * tf.ones_like(x)}, input_signature=[tf.TensorSpec(None, tf.float32)])
    tf.saved_model.save(root, str(base / VERSION_DIR),
                        signatures={"serving_default": root.f, "custom_signature_key": root.g})
    return base


def keras_sequential(base: Path) -> Path:
    """The suite's Keras model (input named x, identity output) as Keras 3 exports it for serving (model.export):
    the SignatureDef's input key is the Input's name, the output is output_0."""
    import keras

    model = keras.Sequential([keras.layers.Input(shape=(1,), name="x", dtype="float32"),
                              keras.layers.Lambda(lambda x: x, name="y")])
    model.export(str(base / VERSION_DIR), verbose=False)
    return base


def half_plus_two_tflite(base: Path, with_signature: bool) -> Path:
    """half_plus_two (x of shape [-1, 1]) as a model.tflite, with or without a SignatureDef (TF Serving's testdata
    has both: saved_model_half_plus_two_tflite_with_sigdef and saved_model_half_plus_two_tflite)."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    @tf.autograph.experimental.do_not_convert
    def half_plus_two(x):
        return {"y": x * 0.5 + 2.0}

    if with_signature:  # a SavedModel's signatures become the flatbuffer's SignatureDefs
        module = tf.Module()
        module.f = half_plus_two
        saved = base / "saved_model_for_conversion"
        tf.saved_model.save(module, str(saved), signatures={"serving_default": half_plus_two})
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    else:  # a bare concrete function converts without one
        converter = tf.lite.TFLiteConverter.from_concrete_functions([half_plus_two.get_concrete_function()])
    path = base / VERSION_DIR
    path.mkdir(parents=True)
    (path / "model.tflite").write_bytes(converter.convert())
    return base
