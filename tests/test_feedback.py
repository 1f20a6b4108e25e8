"""Docstring examples as tests, and the feedback line a reranker reads (real process sandbox)."""
from codegen.datasets import load_problems
from codegen.doctests import docstring_examples, example_tests, prompt_function
from codegen.synthetic import load_split
from rerankers.feedback import NO_EXAMPLES, ExampleRunner, example_share, feedback_line, with_feedback

HUMANEVAL_STYLE = '''from typing import List


def helper(x):
    return x


def below_zero(operations: List[int]) -> bool:
    """ Detect if the balance falls below zero.
    >>> below_zero([1, 2, 3])
    False
    >>> below_zero([1, 2, -4, 5])
    True
    >>> helper(3)
    3
    >>> print(below_zero([]))
    False
    >>> below_zero([1,
    """
'''


def test_examples_are_the_prompts_own_function_calls_with_one_line_results():
    assert prompt_function(HUMANEVAL_STYLE) == "below_zero"
    # helper(3) calls another function; print(...) is not a call of below_zero; the last one is cut short.
    assert docstring_examples(HUMANEVAL_STYLE) == [("below_zero([1, 2, 3])", "False"),
                                                   ("below_zero([1, 2, -4, 5])", "True")]
    assert example_tests(HUMANEVAL_STYLE) == "assert below_zero([1, 2, 3]) == False\nassert below_zero([1, 2, -4, 5]) == True\n"
    assert example_tests("Write a function that adds two numbers.") is None
    assert example_tests("def f(x):\n    return x\n") is None


def test_humaneval_canonical_solutions_pass_their_own_examples():
    problems = [p for p in load_problems("humaneval") if docstring_examples(p.prompt)]
    assert len(problems) > 50
    with ExampleRunner() as runner:
        lines = runner.lines([p.prompt for p in problems], [p.canonical_solution for p in problems])
    passed_all = [line for line in lines if example_share(line) == 1.0]
    # A docstring or two disagrees with its own solution (e.g. float formatting): nearly all agree.
    assert len(passed_all) >= len(problems) - 3, [ln for ln in lines if example_share(ln) != 1.0]


def test_feedback_lines_from_the_sandbox():
    problem = load_split("reference")[0]
    body = problem.canonical_solution
    candidates = [body, "    return None\n", "    while True:\n        pass\n", "    x = (\n", body.rstrip("\n")]
    with ExampleRunner() as runner:
        lines = runner.lines([problem.prompt] * len(candidates) + ["no examples here"], candidates + ["x"])
    assert lines == ["# examples: 1/1 passed\n", "# examples: 0/1 passed\n", "# examples: timeout\n",
                     "# examples: error\n", "# examples: 1/1 passed\n", NO_EXAMPLES]


def test_feedback_line_and_share_for_every_status():
    assert feedback_line(None) == NO_EXAMPLES
    assert feedback_line({"status": "failed", "tests_passed": 1, "tests_total": 3}) == "# examples: 1/3 passed\n"
    assert feedback_line({"status": "oom"}) == "# examples: error\n"
    assert feedback_line({"status": "infra_error"}) == NO_EXAMPLES  # a sandbox hiccup says nothing
    assert example_share("# examples: 1/3 passed\n") == 1 / 3
    assert example_share("# examples: timeout\n") == -1.0
    assert with_feedback("    return 1", "# examples: none\n") == "    return 1\n# examples: none\n"
    assert with_feedback("    return 1\n", "# examples: none\n") == "    return 1\n# examples: none\n"
