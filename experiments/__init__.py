"""
The studies behind the README's answer, each run as `python -m experiments.NAME` from the project
root, each with a page in docs/ that opens with the command that reproduces it:

    arms    which kind of learner corrects smart past N (16 arms, the best on 3 seeds)  arms.md
    probe   the learner handed attempts of known quality: right, a slip, smart's       arms.md
    digits  which digit goes wrong past N, and with what                               anatomy.md
    tasks   the whole experiment on every task                                         tasks.md
    noise   static against dynamic noise in the training traces                        noise.md
    sweep   chain-of-thought formats against position schemes                          sweep.md
    reach   the learner in stage 5's loop: as corrector, taught the step, as checker   reach.md
    voters  who must vote for a label: all the smarts, a pair, one, with confidence    voters.md
    rounds  stage 5's round screened: a run's copy goes on with one thing changed      extend.md
    bench   our model against Hugging Face's GPT-2 of the same size                    speed.md

study.py holds what several of them share. A study may import a stage's functions; no stage
imports a study.
"""
