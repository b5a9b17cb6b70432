"""The seed's dask-ml ParallelPostFit(SVC) example as a client submits it, run by the AWS tests in
the image's isolated Python (the test venv has no scikit-learn): fits, submits the prediction graph
to the state machine at $AWS_ENDPOINT_URL, and leaves the expected predictions for the test.

    python3.12 -I -S seed_svc_client.py --path <entry> ... --state-machine <arn> --expected <file.npy>
"""

import argparse
import json
import sys


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--path", action="append", required=True)
    parser.add_argument("--state-machine", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--expected", required=True)
    args = parser.parse_args()
    sys.path[:0] = args.path

    import boto3
    import dask_ml.datasets
    import numpy as np
    import sklearn.datasets
    from dask_ml.wrappers import ParallelPostFit
    from sklearn.svm import SVC

    from wukong.aws.submit import submit_job

    # the seed's code, at the seed's sizes
    x, y = sklearn.datasets.make_classification(n_samples=1000)
    classifier = ParallelPostFit(SVC(gamma="scale"))
    classifier.fit(x, y)
    x_big, _ = dask_ml.datasets.make_classification(n_samples=100_000, random_state=100_000, chunks=100_000 // 20)
    predicted = classifier.predict(x_big)

    np.save(args.expected, predicted.compute(scheduler="sync"))
    handle = submit_job(predicted.__dask_graph__(), predicted.__dask_keys__(), state_machine_arn=args.state_machine,
                        bucket=args.bucket, sfn_client=boto3.client("stepfunctions"), s3_client=boto3.client("s3"))
    print(json.dumps({"job_id": handle.job_id, "execution_arn": handle.execution_arn}))


if __name__ == "__main__":
    main()
