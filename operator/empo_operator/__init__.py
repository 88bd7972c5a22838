"""The empo operator: reconciles EmpoRuns into KubeRay RayJobs and mirrors their status."""
