"""LLaMA-Factory's own argument parsing of what `tunelab export llamafactory` wrote.

usage: llamafactory_parse.py EXPORT_DIR
Parses train_lora_sft.yaml and predict.yaml with llamafactory.hparams.get_train_args (which
refuses unknown keys and checks the combinations) and resolves every dataset they name
through LLaMA-Factory's dataset_info.json parser. Prints one JSON line of what it read.
Run from EXPORT_DIR's parent or anywhere: paths in the YAML are taken relative to EXPORT_DIR.
"""
import json
import os
import sys

os.environ.setdefault("DISABLE_VERSION_CHECK", "1")

import types  # noqa: E402

import llamafactory  # noqa: E402
import yaml  # noqa: E402

# llamafactory.data's __init__ imports the multimodal plugins (torchaudio, torchvision, av),
# which argument and dataset parsing do not use: its parser module is loaded on its own.
_data = types.ModuleType("llamafactory.data")
_data.__path__ = [os.path.join(os.path.dirname(llamafactory.__file__), "data")]
sys.modules["llamafactory.data"] = _data

from llamafactory.data.parser import get_dataset_list  # noqa: E402
from llamafactory.hparams import get_train_args  # noqa: E402


def main():
    export = sys.argv[1]
    os.chdir(export)
    seen = {}
    for name in ("train_lora_sft.yaml", "predict.yaml"):
        with open(name) as f:
            args = yaml.safe_load(f)
        model, data, training, finetuning, generating = get_train_args(args)
        datasets = (data.dataset or []) + (data.eval_dataset or [])
        attrs = get_dataset_list(datasets, data.dataset_dir)
        seen[name] = {
            "do_train": training.do_train,
            "do_predict": training.do_predict,
            "predict_with_generate": training.predict_with_generate,
            "finetuning_type": finetuning.finetuning_type,
            "lora_rank": finetuning.lora_rank,
            "lora_alpha": finetuning.lora_alpha,
            "learning_rate": training.learning_rate,
            "template": data.template,
            "datasets": [f"{a.dataset_name}:{a.formatting}" for a in attrs],
            "do_sample": generating.do_sample,
        }
    print(json.dumps(seen, sort_keys=True))


if __name__ == "__main__":
    main()
