"""
The studies behind the README's answer, each run as `python -m experiments.NAME` from the project
root, each with a page in docs/ that opens with the command that reproduces it:

    arms     which kind of learner corrects smart past N (16 arms, the best on three seeds)   docs/arms.md
    probe    the learner handed attempts whose quality is known: the right one, a slip, smart's   docs/arms.md
    digits   which digit goes wrong past N, and with what                                      docs/anatomy.md
    tasks    the whole experiment on every task                                                docs/tasks.md
    noise    static against dynamic noise in the training traces                               docs/noise.md
    sweep    chain-of-thought formats against position schemes                                 docs/sweep.md
    reach    how far past N self-labelling and the learner as labeller reach                   docs/reach.md
    bench    our model against Hugging Face's GPT-2 of the same size                           docs/speed.md

study.py holds what several of them share. A study may import a stage's functions; no stage imports a study.
"""
