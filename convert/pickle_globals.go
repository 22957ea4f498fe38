package convert

// The allowed globals: every module.name a niels-gpt checkpoint may reference, each
// with the kind that says how the unpickler interprets it. A GLOBAL or STACK_GLOBAL
// naming anything else is refused before anything is built.

import "fmt"

type globalKind int

const (
	gOrderedDict globalKind = iota + 1
	gRebuildTensor
	gRebuildTensorV2
	gRebuildTensorV3
	gRebuildParameter
	gRebuildParameterWithState
	gRebuildFromTypeV2
	gStorageType // torch.FloatStorage & co.: only ever an argument to persistent_load
	gTorchDtype  // torch.float32 & co.: only ever an argument (to _rebuild_tensor_v3)
	gTensorType  // torch.Tensor, torch.nn.parameter.Parameter: new_type of _rebuild_from_type_v2
	gTorchSize
	gTorchDevice
	gSet
	gBytes
	gCodecsEncode
	gNumpyScalar
	gNumpyDtype
	gPlainObject // inert record: argparse.Namespace, pathlib paths
)

// allowedGlobals is every module.name a checkpoint may reference. The list comes from
// what torch.save writes for a dict of ints, floats, strings, tensors and optimizer
// state (see the fixtures), plus what protocol 2 uses for bytes and sets, numpy
// scalars (a loss taken from numpy), and plain records often found in a train_cfg.
var allowedGlobals = map[string]globalKind{
	"collections.OrderedDict":                    gOrderedDict,
	"torch._utils._rebuild_tensor":               gRebuildTensor,
	"torch._utils._rebuild_tensor_v2":            gRebuildTensorV2,
	"torch._utils._rebuild_tensor_v3":            gRebuildTensorV3,
	"torch._utils._rebuild_parameter":            gRebuildParameter,
	"torch._utils._rebuild_parameter_with_state": gRebuildParameterWithState,
	"torch._tensor._rebuild_from_type_v2":        gRebuildFromTypeV2,
	"torch.Tensor":                               gTensorType,
	"torch._tensor.Tensor":                       gTensorType,
	"torch.nn.parameter.Parameter":               gTensorType,
	"torch.Size":                                 gTorchSize,
	"torch.device":                               gTorchDevice,
	"builtins.set":                               gSet,
	"builtins.frozenset":                         gSet,
	"__builtin__.set":                            gSet,
	"__builtin__.frozenset":                      gSet,
	"builtins.bytes":                             gBytes,
	"__builtin__.bytes":                          gBytes,
	"builtins.bytearray":                         gBytes,
	"__builtin__.bytearray":                      gBytes,
	"_codecs.encode":                             gCodecsEncode,
	"numpy.core.multiarray.scalar":               gNumpyScalar,
	"numpy._core.multiarray.scalar":              gNumpyScalar,
	"numpy.dtype":                                gNumpyDtype,
	"argparse.Namespace":                         gPlainObject,
	"pathlib.Path":                               gPlainObject,
	"pathlib.PosixPath":                          gPlainObject,
	"pathlib.WindowsPath":                        gPlainObject,
	"pathlib.PurePosixPath":                      gPlainObject,
	"pathlib.PureWindowsPath":                    gPlainObject,
	"pathlib._local.PosixPath":                   gPlainObject,
	"pathlib._local.WindowsPath":                 gPlainObject,
}

func init() {
	for name := range storageTypes {
		allowedGlobals["torch."+name] = gStorageType
	}
	for name := range torchDtypes {
		allowedGlobals["torch."+name] = gTorchDtype
	}
}

func lookupGlobal(module, name string) (pyGlobal, error) {
	kind, ok := allowedGlobals[module+"."+name]
	if !ok {
		return pyGlobal{}, fmt.Errorf("refusing pickle global %s.%s: not something a niels-gpt checkpoint contains (nothing in the file is executed)", module, name)
	}
	return pyGlobal{module: module, name: name, kind: kind}, nil
}
