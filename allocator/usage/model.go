package usage

import (
	"regexp"
	"strings"
)

// modelFlags name the served or trained model in common launchers
// (vLLM, SGLang, TGI, lm-eval, Hugging Face scripts).
var modelFlags = map[string]bool{
	"--model": true, "--model-id": true, "--model-name": true, "--model_name": true,
	"--model-path": true, "--model_path": true, "--model_name_or_path": true,
}

// hubName looks like a Hugging Face repository id: "org/name".
var hubName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// GuessModel finds the AI model a command line serves or trains: a model
// flag's value, `vllm serve NAME`, or else the first argument shaped like
// a Hugging Face id. It returns "" when nothing looks like a model.
func GuessModel(argv []string) string {
	for i, a := range argv {
		name, value, hasValue := strings.Cut(a, "=")
		if modelFlags[name] {
			if hasValue {
				return value
			}
			if i+1 < len(argv) {
				return argv[i+1]
			}
		}
		if a == "serve" && i > 0 && strings.HasSuffix(argv[i-1], "vllm") && i+1 < len(argv) && !strings.HasPrefix(argv[i+1], "-") {
			return argv[i+1]
		}
	}
	for i, a := range argv {
		if i == 0 || strings.HasPrefix(a, "-") {
			continue
		}
		if hubName.MatchString(a) && !looksLikeFile(a) {
			return a
		}
	}
	return ""
}

// looksLikeFile rules out relative paths such as "data/train.py" that
// have the org/name shape.
func looksLikeFile(a string) bool {
	for _, ext := range []string{".py", ".sh", ".json", ".yaml", ".yml", ".txt", ".csv", ".ipynb", ".pt", ".bin", ".safetensors", ".gguf"} {
		if strings.HasSuffix(strings.ToLower(a), ext) {
			return true
		}
	}
	return false
}
