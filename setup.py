"""ament_python package ros2_infmllm: streaming visual memory for ROS 2."""
from glob import glob

from setuptools import find_packages, setup

package_name = 'ros2_infmllm'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['tests', 'tests.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*.launch.py')),
        ('share/' + package_name + '/config', glob('config/*.yaml') + glob('config/*.xml')),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='ros2_infmllm developers',
    maintainer_email='dev@ros2-infmllm.invalid',
    description='Inf-MLLM bounded KV-cache visual memory node for ROS 2',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'infmllm_node = ros2_infmllm.ros.node:main',
            'infmllm-eval = ros2_infmllm.eval.__main__:main',
        ],
    },
)
