"""lm-evaluation-harness on nextlab models, both ways it can reach one: the `hf` backend on an exported model, and
`local-completions` on `nextlab serve` (tokenizing through its vLLM endpoints, with no other flag). Item by item,
both give the log-likelihoods `nextlab eval` gives on the same local task file, and the same greedy answers.
Everything is local: the suite's tiny trained model (its greedy answers are text, as a random model's bytes are not),
a JSONL task written here, no downloads."""

import json
import os

import pytest
from conftest import serving

lm_eval = pytest.importorskip("lm_eval")
pytest.importorskip("transformers")

from nextlab.checkpoint import load_checkpoint  # noqa: E402
from nextlab.evals import evaluate_task, load_jsonl_task  # noqa: E402
from nextlab.hf import export_checkpoint  # noqa: E402
from nextlab.sample import greedy_continuations  # noqa: E402

PROMPTS = ["the big dog", "a cat", "the old house and", "the red bird sees", "a small"]
CHOICES = [" sees", " runs", " eats the"]
TASK_YAML = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: {output_type}
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{target}"
target_delimiter: ""
{extra}"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_checkpoint):
    d = tmp_path_factory.mktemp("lm_eval")
    ckpt = load_checkpoint(tiny_checkpoint)
    model, tok = ckpt.model, ckpt.tokenizer
    items = [{"prompt": p, "choices": CHOICES, "answer": 0} for p in PROMPTS]
    (d / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    tasks = d / "tasks"
    tasks.mkdir()
    (tasks / "mc.yaml").write_text(TASK_YAML.format(
        name="nextlab_mc", data=d / "items.jsonl", output_type="multiple_choice", target="{{answer}}",
        extra='doc_to_choice: "{{choices}}"\nmetric_list:\n  - metric: acc\n'))
    (tasks / "gen.yaml").write_text(TASK_YAML.format(
        name="nextlab_gen", data=d / "items.jsonl", output_type="generate_until", target="{{choices[0]}}",
        extra="generation_kwargs:\n  until: [\"\\n\"]\n  max_gen_toks: 6\n  do_sample: false\n  temperature: 0\n"
              "metric_list:\n  - metric: exact_match\n"))
    os.environ.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", HF_DATASETS_CACHE=str(d / "datasets"))
    return d, tiny_checkpoint, model, tok


def run_lm_eval(d, model: str, model_args: str) -> dict:
    from lm_eval.tasks import TaskManager

    res = lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=["nextlab_mc", "nextlab_gen"],
                                  task_manager=TaskManager(include_path=str(d / "tasks")), log_samples=True, batch_size=4)
    samples = res["samples"]
    return {"loglikelihoods": [[r[0][0] for r in s["resps"]] for s in samples["nextlab_mc"]],
            "answers": [s["resps"][0][0] for s in samples["nextlab_gen"]]}


def expected(d, model, tok) -> dict:
    ours = evaluate_task(model, tok, load_jsonl_task(d / "items.jsonl"), greedy=False)
    contexts = [[tok.eot_id] + tok.encode(p) for p in PROMPTS]
    answers = [tok.decode(ids).split("\n")[0] for ids in greedy_continuations(model, tok, contexts, [6] * len(PROMPTS))]
    return {"loglikelihoods": [it["choice_logprobs"] for it in ours["items"]], "answers": answers}


def assert_same(got: dict, want: dict) -> None:
    assert len(got["loglikelihoods"]) == len(want["loglikelihoods"]) == len(PROMPTS)
    for theirs, ours in zip(got["loglikelihoods"], want["loglikelihoods"]):
        assert theirs == pytest.approx(ours, abs=1e-4)
    assert got["answers"] == want["answers"] and all(want["answers"])  # real words, not empty strings


def test_the_hf_backend_on_an_export_matches_nextlab_eval(setup):
    d, ckpt, model, tok = setup
    out = export_checkpoint(ckpt, d / "hf")
    assert_same(run_lm_eval(d, "hf", f"pretrained={out},dtype=float32,device=cpu"), expected(d, model, tok))


def test_local_completions_on_nextlab_serve_matches_nextlab_eval(setup):
    d, ckpt, model, tok = setup
    with serving(ckpt, "--threads", "1", "--name", "m") as base:
        got = run_lm_eval(d, "local-completions", f"model=m,base_url={base}/v1/completions")
    assert_same(got, expected(d, model, tok))
