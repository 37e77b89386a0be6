"""The subset of Caffe's ``caffe.proto`` that the Caffe exporter writes, as
protobuf message classes built at import time (no ``protoc``, no Caffe).

Field names and numbers are Caffe's, so the written ``.prototxt`` (text
format, read by name) and ``.caffemodel`` (binary, read by number) load in
Caffe and in OpenCV's ``cv2.dnn.readNetFromCaffe``. Only the fields the
exporter sets are declared.

Messages: ``NetParameter``, ``LayerParameter``, ``BlobProto``, ``BlobShape`` and the
parameters of the Input, Convolution / Deconvolution, BatchNorm, Scale,
Pooling, Eltwise and Power layers (ReLU and Sigmoid need none).
"""

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "bool": _F.TYPE_BOOL,
    "float": _F.TYPE_FLOAT,
    "int32": _F.TYPE_INT32,
    "int64": _F.TYPE_INT64,
    "uint32": _F.TYPE_UINT32,
    "string": _F.TYPE_STRING,
}

# message -> enums {name: [(value name, number)]}
_ENUMS = {
    "PoolingParameter": {"PoolMethod": [("MAX", 0), ("AVE", 1), ("STOCHASTIC", 2)]},
    "EltwiseParameter": {"EltwiseOp": [("PROD", 0), ("SUM", 1), ("MAX", 2)]},
}

# message -> fields (name, number, type, repeated, packed); a type that is not a
# scalar names a message of this file or an enum nested in the message.
_MESSAGES = {
    "BlobShape": [("dim", 1, "int64", True, True)],
    "BlobProto": [("data", 5, "float", True, True), ("shape", 7, "BlobShape", False, False)],
    "InputParameter": [("shape", 1, "BlobShape", True, False)],
    "ConvolutionParameter": [
        ("num_output", 1, "uint32", False, False),
        ("bias_term", 2, "bool", False, False),
        ("pad", 3, "uint32", True, False),
        ("kernel_size", 4, "uint32", True, False),
        ("group", 5, "uint32", False, False),
        ("stride", 6, "uint32", True, False),
        ("dilation", 18, "uint32", True, False),
    ],
    "BatchNormParameter": [("use_global_stats", 1, "bool", False, False), ("eps", 3, "float", False, False)],
    "ScaleParameter": [("axis", 1, "int32", False, False), ("bias_term", 4, "bool", False, False)],
    "PoolingParameter": [
        ("pool", 1, "PoolMethod", False, False),
        ("kernel_size", 2, "uint32", False, False),
        ("stride", 3, "uint32", False, False),
        ("pad", 4, "uint32", False, False),
    ],
    "EltwiseParameter": [("operation", 1, "EltwiseOp", False, False), ("coeff", 2, "float", True, False)],
    "PowerParameter": [
        ("power", 1, "float", False, False),
        ("scale", 2, "float", False, False),
        ("shift", 3, "float", False, False),
    ],
    "LayerParameter": [
        ("name", 1, "string", False, False),
        ("type", 2, "string", False, False),
        ("bottom", 3, "string", True, False),
        ("top", 4, "string", True, False),
        ("blobs", 7, "BlobProto", True, False),
        ("convolution_param", 106, "ConvolutionParameter", False, False),
        ("eltwise_param", 110, "EltwiseParameter", False, False),
        ("pooling_param", 121, "PoolingParameter", False, False),
        ("power_param", 122, "PowerParameter", False, False),
        ("batch_norm_param", 139, "BatchNormParameter", False, False),
        ("scale_param", 142, "ScaleParameter", False, False),
        ("input_param", 143, "InputParameter", False, False),
    ],
    "NetParameter": [("name", 1, "string", False, False), ("layer", 100, "LayerParameter", True, False)],
}


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(name="centerx_caffe_subset.proto", package="caffe", syntax="proto2")
    for msg_name, fields in _MESSAGES.items():
        msg = fdp.message_type.add(name=msg_name)
        enums = _ENUMS.get(msg_name, {})
        for enum_name, values in enums.items():
            enum = msg.enum_type.add(name=enum_name)
            for value_name, number in values:
                enum.value.add(name=value_name, number=number)
        for name, number, type_, repeated, packed in fields:
            field = msg.field.add(name=name, number=number, label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
            if type_ in _SCALARS:
                field.type = _SCALARS[type_]
            elif type_ in enums:
                field.type = _F.TYPE_ENUM
                field.type_name = f".caffe.{msg_name}.{type_}"
            else:
                field.type = _F.TYPE_MESSAGE
                field.type_name = f".caffe.{type_}"
            if packed:
                field.options.packed = True
    return fdp


def _build_classes():
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file_descriptor())
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"caffe.{name}")) for name in _MESSAGES}


_CLASSES = _build_classes()
NetParameter = _CLASSES["NetParameter"]
LayerParameter = _CLASSES["LayerParameter"]
BlobProto = _CLASSES["BlobProto"]
BlobShape = _CLASSES["BlobShape"]
